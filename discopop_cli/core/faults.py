"""Faults that are nobody's input, each one line: a full disk (the folder, the space needed and free), an interrupt
(Ctrl-C: exit 130; SIGTERM: exit 143), and messages too long to read (a 55 MB value quoted back), cut to a readable
length."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from discopop_cli.core.errors import RunFailure

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C
TERMINATED_EXIT = 143  # 128 + SIGTERM
MESSAGE_LIMIT = 600  # characters of an error line shown; the start and the end (the fix) are kept
_DISK_FULL_TEXT = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """The message on one line, its middle cut when it is longer than `limit` characters."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[-tail:]}"


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is the disk running out of space, however the library reports it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current) for text in _DISK_FULL_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(folder: Path) -> int:
    """Free space for this user on the filesystem `folder` is (or would be) on."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@contextlib.contextmanager
def disk_space(folder: Path, needed: int | None, what: str = "the output") -> Iterator[None]:
    """Refuse up front when `needed` bytes clearly do not fit in `folder`; a disk that fills up during the block is
    one line with the space needed and free, instead of a traceback. Run it outside the staging, so the partial
    output is gone by the time the free space is measured."""
    free = free_bytes(folder)
    wants = f"about {human_bytes(needed)}" if needed else "more"
    if needed is not None and needed > free:
        raise RunFailure(
            f"not enough space in {folder} for {what}: it needs {wants} and {human_bytes(free)} is free; "
            "free some space or choose another path"
        )
    try:
        yield
    except BaseException as exc:
        if not is_disk_full(exc):
            raise
        raise RunFailure(
            f"the disk filled up while writing {what} in {folder}: it needs {wants}, {human_bytes(free)} was free; "
            "nothing was kept; free some space or choose another path"
        ) from None


class Terminated(BaseException):
    """SIGTERM (`kill`, a batch scheduler's time limit, a container stopping), raised where the program is, as Ctrl-C
    raises KeyboardInterrupt, so the same clean-up runs: staging removed, locks released, child processes stopped.

    Python's default is to die at once, skipping all of that. A BaseException, so nothing that catches Exception
    swallows it, and apart from KeyboardInterrupt, which `discopop chat` takes to stop one reply, not the session.
    """


_sigterm_owner: int | None = None  # the process whose SIGTERM raises Terminated


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in this process (main thread only: Python delivers signals there).

    Processes forked from this one (a dataset's map workers) keep dying at once: their pools stop idle workers with
    SIGTERM, which would otherwise print a traceback per worker.
    """
    global _sigterm_owner
    if threading.current_thread() is not threading.main_thread():
        return
    _sigterm_owner = os.getpid()
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: object) -> None:
    if os.getpid() != _sigterm_owner:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


@contextlib.contextmanager
def c_call_interrupts() -> Iterator[None]:
    """Ctrl-C during a long C call that reports through Python callbacks (llama.cpp loading a model logs through a
    ctypes callback) is honoured when the call returns.

    Python raises KeyboardInterrupt at the next line of Python it runs, which there is inside the callback; ctypes
    prints and drops an exception raised in a callback, so the interrupt would be lost. The handler here notes it
    before raising, and the block raises it again once the C call is over. SIGTERM, where it raises Terminated
    (`raise_on_sigterm`), is kept the same way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[type[BaseException]] = []
    kept = {signal.SIGINT: KeyboardInterrupt}
    if signal.getsignal(signal.SIGTERM) is _terminated and os.getpid() == _sigterm_owner:
        kept[signal.SIGTERM] = Terminated

    def note(signum: int, frame: object) -> None:
        raised.append(kept[signum])
        raise kept[signum]

    previous = {signum: signal.signal(signum, note) for signum in kept}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if raised:
        raise raised[0]
