"""One writer per output: an exclusive lock beside it, and the staging files of dead runs cleared away.

`output_lock(DEST, command)` takes `.DEST.lock` beside DEST with `flock` (released by the kernel when the holder
exits, however it exits) and writes the holder into it: pid, command line, start time. A second run finds the lock
held and is refused in one line naming the holder. A lock file whose holder is gone (killed, the machine rebooted)
is taken over with a notice. Holding the lock, the run removes what runs that died left beside DEST (their
`.DEST.partial-PID-...`, `.DEST.old-PID-...` and the like) and says how much space that freed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice
from discopop_cli.core.errors import UserError
from discopop_cli.core.faults import human_bytes, is_disk_full
from discopop_cli.core.outputs import STAGING_KINDS, check_destination, check_writable

_COMMAND_SHOWN = 160  # characters of the holder's command line kept in the lock


def lock_path(destination: Path) -> Path:
    return destination.parent / f".{destination.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _describe(record: dict[str, Any]) -> str:
    return f"pid {record.get('pid', '?')}, `{record.get('command', '?')}`, started {record.get('started', '?')}"


def _read_record(handle: Any) -> dict[str, Any]:
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _command_line(command: str) -> str:
    """The holder's command line as typed, when this process is that command; else the command's name."""
    words = sys.argv[1:]
    line = " ".join(["discopop", *words]) if words[:1] == command.split()[:1] else f"discopop {command}"
    return line if len(line) <= _COMMAND_SHOWN else line[: _COMMAND_SHOWN - 3] + "..."


def _open_locked(path: Path, destination: Path) -> Any:
    """The lock file, open and flocked by this process; a UserError naming the holder when another has it."""
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                handle.close()
                raise
            holder = _read_record(handle)
            handle.close()
            raise UserError(
                f"{destination} is being written by another discopop run ({_describe(holder)}); wait for it to "
                "finish, or choose another path"
            ) from None
        # The holder before us may have removed the file between our open and our flock: lock the file at the path.
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


@contextlib.contextmanager
def output_lock(destination: Path, command: str, *, whole_folder: bool = False) -> Iterator[None]:
    """Hold the lock of `destination` for the block; clear away what dead runs left beside it first (with
    `whole_folder`, what they left anywhere in its folder: the lock stands for the folder)."""
    destination = Path(destination)
    check_writable(destination)
    created = []
    folder = destination.parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    path = lock_path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_locked(path, destination)
    except BaseException as exc:
        _remove_created(created)
        if isinstance(exc, OSError) and not is_disk_full(exc):
            raise UserError(f"cannot take the lock {path} ({exc.strerror or exc}); choose another path") from None
        raise
    try:
        earlier = _read_record(handle)
        if earlier and earlier.get("pid") != os.getpid():
            notice(f"took over the lock of {destination} from a run that is no longer running ({_describe(earlier)})")
        handle.seek(0)
        handle.truncate()
        record = {
            "pid": os.getpid(),
            "command": _command_line(command),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        sweep_stale(destination, whole_folder=whole_folder)
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        _remove_created(created)


@contextlib.contextmanager
def claimed(destination: Path, command: str, *, force: bool, what: str) -> Iterator[None]:
    """`output_lock`, and the destination checked again holding it: a run that held it may just have written it."""
    with output_lock(destination, command):
        check_destination(destination, force=force, what=what)
        yield


def _remove_created(folders: list[Path]) -> None:
    """The parent folders made for the lock, if nothing else went into them."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def sweep_stale(destination: Path, *, whole_folder: bool = False) -> int:
    """Remove the staging files and folders that runs no longer running left beside `destination` (or anywhere in
    its folder); the bytes freed."""
    name = ".+" if whole_folder else re.escape(destination.name)
    pattern = re.compile(rf"^\.{name}\.(?:{'|'.join(STAGING_KINDS)})-(\d+)(?:-\w+)?$")
    if not destination.parent.is_dir():
        return 0
    freed, pids = 0, set()
    for entry in destination.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            size = _size(entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        freed += size
        pids.add(match.group(1))
    if pids:
        notice(
            f"removed what {len(pids)} earlier run(s) left in {destination.parent} when they stopped "
            f"(pid {', '.join(sorted(pids))}): {human_bytes(freed)} freed"
        )
    return freed
