"""A training run's directory: its checkpoints while it trains, the final model once it has finished.

Training writes straight into `output_dir`, so a run killed at any point leaves its checkpoints where
`--resume` finds them. The final model, card and recipe are written to `output_dir/.final.partial` and moved
into place file by file when complete (the card last), so a half-written model never appears. `--force`
moves an earlier output aside first and deletes it once the new run holds a checkpoint or has finished; a run
that fails before that puts the earlier output back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from discopop_cli.core.console import is_main_rank, notice
from discopop_cli.core.errors import UserError
from discopop_cli.core.faults import human_bytes
from discopop_cli.core.locks import output_lock
from discopop_cli.core.outputs import MARKER, check_replaceable_folder, check_writable, mark, staging_name

FINAL_STAGING = ".final.partial"
CARD = "README.md"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# transformers writes a checkpoint's trainer_state.json last: a checkpoint without it was cut off mid-write.
_COMPLETE_MARKER = "trainer_state.json"


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-N folder, in step order."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return sorted(found)


def last_complete_checkpoint(folder: Path) -> Path | None:
    complete = [path for _, path in checkpoints(folder) if (path / _COMPLETE_MARKER).is_file()]
    return complete[-1] if complete else None


def check_run_directory(destination: Path, *, force: bool, resume: bool) -> Path | None:
    """Refuse what would lose work; return the checkpoint a `--resume` run continues from."""
    if resume and force:
        raise UserError(
            f"--resume continues the run in {destination} and --force replaces it; pass one of them, not both"
        )
    if destination.exists() and not destination.is_dir():
        raise UserError(f"output directory {destination} is a file; choose another path with --output-dir")
    check_writable(destination)
    holds_something = destination.is_dir() and any(destination.iterdir())
    last = last_complete_checkpoint(destination)
    if resume:
        if last is None:
            raise UserError(
                f"--resume: {destination} holds no complete checkpoint-N to continue from; "
                "run without --resume to start afresh (with --force if the folder is not empty)"
            )
        cut_off = [p.name for step, p in checkpoints(destination) if step > _step(last)]
        if cut_off:
            notice(f"{', '.join(cut_off)} in {destination} was cut off while being written; resuming from {last.name}")
        return last
    if holds_something and force:
        check_replaceable_folder(destination, "output directory")
    if holds_something and not force:
        if last is not None:
            raise UserError(
                f"output directory {destination} already exists and holds a run ({last.name}); pass --resume to "
                "continue it, --force to replace it, or choose another path with --output-dir"
            )
        raise UserError(
            f"output directory {destination} already exists; pass --force to replace it or choose another path "
            "with --output-dir"
        )
    return None


def _step(checkpoint: Path) -> int:
    match = _CHECKPOINT.match(checkpoint.name)
    return int(match.group(1)) if match else -1


@contextlib.contextmanager
def run_directory(destination: Path, *, command: str, force: bool) -> Iterator[Path]:
    """Prepare `destination` for training and yield the folder the final artefacts are staged in.

    Only the main process (rank 0) marks, moves or deletes anything; every rank gets the same staging path, because
    under FSDP and ZeRO-3 all of them take part in saving the model.
    """
    staging = destination / FINAL_STAGING
    if not is_main_rank():
        yield staging
        return
    with _prepared(destination, staging, command=command, force=force):
        yield staging


@contextlib.contextmanager
def run_lock(destination: Path, command: str) -> Iterator[None]:
    """One run per output directory: the lock beside it, held by the main process from the checks of the folder
    to the end of the run, so a second run is refused before it loads anything."""
    if not is_main_rank():
        yield
        return
    with output_lock(destination, command):
        yield


@contextlib.contextmanager
def _prepared(destination: Path, staging: Path, *, command: str, force: bool) -> Iterator[None]:
    replaced = None
    if force and destination.is_dir() and any(destination.iterdir()):
        replaced = staging_name(destination, "replaced")
        destination.rename(replaced)
    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    earlier = {path.name for _, path in checkpoints(destination)}
    if staging.exists():
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        shutil.rmtree(staging, ignore_errors=True)
        notice(f"removed {staging.name} in {destination}, left by a run that stopped: {human_bytes(size)} freed")
    mark(destination, command)
    try:
        yield
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for _, path in checkpoints(destination):  # this run's checkpoint cut off mid-write (a full disk): useless
            if path.name not in earlier and not (path / _COMPLETE_MARKER).is_file():
                shutil.rmtree(path, ignore_errors=True)
        kept = last_complete_checkpoint(destination)
        if kept is not None:
            notice(f"training stopped; {kept} is kept: add --resume to the same command to continue from it")
            if replaced is not None:
                shutil.rmtree(replaced)
        elif replaced is not None:
            shutil.rmtree(destination)
            replaced.rename(destination)
            notice(f"training stopped before its first checkpoint; {destination} is as it was before --force")
        elif set(os.listdir(destination)) <= {MARKER}:  # nothing of the run: leave the folder as it was
            if created:
                shutil.rmtree(destination)
            else:
                (destination / MARKER).unlink(missing_ok=True)
        raise
    if replaced is not None:
        shutil.rmtree(replaced)


def publish(staging: Path, destination: Path) -> None:
    """Move the completed final artefacts from `staging` into `destination`, one rename each, the card last."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == CARD)
    for entry in entries:
        target = destination / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
