"""Outputs are built under a temporary name beside their destination and renamed into place when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from discopop_cli.core.errors import UserError


def check_writable(path: Path) -> None:
    """Refuse an output whose nearest existing ancestor is a file or a folder this user cannot write to."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise UserError(f"cannot create {path}: {probe} is a file, not a folder; choose another path")
    folder = probe if probe.is_dir() else probe.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {folder} is not writable by this user; choose another path")


def check_destination(path: Path, *, force: bool, what: str = "output directory") -> None:
    """Refuse to replace an existing, non-empty output unless --force, and an output that cannot be written."""
    if path.is_file() and not path.is_dir() and what == "output directory":
        raise UserError(f"{what} {path} is a file; choose another path with --output-dir")
    check_writable(path)
    exists = path.exists() and (path.is_file() or any(path.iterdir()))
    if exists and not force:
        raise UserError(f"{what} {path} already exists; pass --force to replace it or choose another path")


def staging_dir(destination: Path) -> Path:
    """A fresh directory beside `destination`, on the same filesystem so the final rename is atomic."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def promote(staging: Path, destination: Path) -> None:
    """Move a completed staging directory into place, replacing what --force allowed to replace."""
    if destination.exists():
        retired = destination.parent / f".{destination.name}.old-{os.getpid()}"
        destination.rename(retired)
        staging.rename(destination)
        if retired.is_dir() and not retired.is_symlink():
            shutil.rmtree(retired)
        else:
            retired.unlink()
    else:
        staging.rename(destination)


@contextlib.contextmanager
def staged_dir(destination: Path) -> Iterator[Path]:
    """A fresh folder beside `destination` to write into; moved into place when the block completes, removed if not."""
    staging = staging_dir(destination)
    try:
        yield staging
        promote(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed onto `path` when the block completes, removed if not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
