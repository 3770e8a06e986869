"""Outputs: kept apart from inputs, replaced only when the tool wrote them, built under a temporary name.

- `check_apart`: an output that is, lies inside or contains an input (resolved through symlinks) is refused.
- `check_destination`: an existing output needs `--force`, and `--force` replaces only what discopop wrote: a
  folder holding its marker file (`.discopop-output.json`, written into every output folder) or, for outputs of
  versions before the marker, the files that identify them (`legacy_owner`); a file carrying discopop's signature
  (a GGUF's `discopop.exported_by` key, a PNG's Software text, the Modelfile's and NOTICE's first lines).
- `staged_dir` / `staged_file`: the output is written beside its destination under a name unique to the run
  (`.NAME.partial-PID-TOKEN`) and renamed into place when complete; removed if the run fails or is interrupted.
  A run killed outright leaves it behind: `locks.output_lock` removes those of dead runs (see there).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import secrets
import shutil
import struct
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from discopop_cli.core.errors import UserError

MARKER = ".discopop-output.json"
# Staging names: `.NAME.KIND-PID[-TOKEN]`, KIND one of these; locks.sweep_stale removes those of dead runs.
STAGING_KINDS = ("partial", "old", "replaced", "intermediate")

# What each command writes into its folder, top level: a marked folder holding anything else was added to by
# someone else, and --force does not delete it. Staging names of the command's own files are always allowed.
_MODEL_FILES = (
    *("*.safetensors", "*.safetensors.index.json", "*config.json", "tokenizer*", "special_tokens_map.json"),
    *("added_tokens.json", "chat_template.*", "vocab.*", "merges.txt", "*.model", "README.md", "recipe.yaml"),
    *("trainer_state.json", "*_results.json"),
)
_TRAIN_FILES = (*_MODEL_FILES, "checkpoint-*", "runs", ".final.partial")
OWN_ENTRIES: dict[str, tuple[str, ...]] = {
    "sft": _TRAIN_FILES,
    "align": _TRAIN_FILES,
    "merge": _MODEL_FILES,
    "demo": _MODEL_FILES,
    "eval judge": ("settings.json", "answers", "judgements", "results.json", "alpaca_eval", "mt_bench", "*.png"),
    "discover": ("discover.json", "archive.jsonl", "candidates", "runs", "fitness.png", "plugin-*"),
    "discover export": ("pyproject.toml", "README.md", "discopop_loss_*"),
}
_ALWAYS_OWN = (MARKER, ".*.partial-*", ".*.lock")
_SHOWN = 5  # entries named when a folder is refused


def tool_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("discopop-cli")
    except metadata.PackageNotFoundError:
        return "unknown"


def real(path: Path) -> Path:
    """The path with every symlink resolved (those that exist); a loop is left as it is, never followed forever."""
    return Path(os.path.realpath(Path(path).expanduser()))


# --- outputs never swallow inputs ---------------------------------------------------------------------------------


def check_apart(output: Path, inputs: Iterable[tuple[str, Path | str | None]], option: str) -> None:
    """Refuse an output that is an input, lies inside one or contains one; `inputs` are (what, path) pairs."""
    target = real(output)
    for what, path in inputs:
        if path is None:
            continue
        source = real(Path(path))
        via = f" ({source})" if source != Path(os.path.abspath(Path(path).expanduser())) else ""
        if target == source:
            relation = f"is the {what} itself{via}"
        elif target.is_relative_to(source):
            relation = f"lies inside the {what} {path}{via}"
        elif source.is_relative_to(target):
            relation = f"contains the {what} {path}{via}"
        else:
            continue
        raise UserError(
            f"{option} {output} {relation}: an output never replaces or holds an input; choose another path"
        )


# --- ownership: what --force may replace -------------------------------------------------------------------------


def mark(folder: Path, command: str) -> None:
    """Write the marker that makes `folder` this tool's own output (replaceable with --force)."""
    record = {
        "tool": "discopop-cli",
        "version": tool_version(),
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def marker_command(folder: Path) -> str | None:
    """The command recorded in `folder`'s marker, or None when it has no readable marker."""
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("tool") != "discopop-cli":
        return None
    return str(record.get("command") or "")


def _front_matter_tags(card: Path) -> list[str]:
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if not text.startswith("---\n") or (end := text.find("\n---", 4)) == -1:
        return []
    import yaml

    from discopop_cli.core.yaml_text import load_yaml_text

    try:
        front = load_yaml_text(text[4:end])
    except (yaml.YAMLError, ValueError):
        return []
    tags = front.get("tags") if isinstance(front, dict) else None
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def _json_keys(path: Path) -> set[str]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    return set(value) if isinstance(value, dict) else set()


def legacy_owner(folder: Path) -> str | None:
    """The command that wrote `folder` before outputs carried a marker, told by the files only it writes; else None.

    A trained model or a merge: its card tagged `discopop-cli`. A judge run: settings.json with the prompts digest,
    sampling and models. A discovery run: discover.json beside archive.jsonl. A loss plugin: a pyproject.toml naming
    a `discopop-loss-` distribution. A run killed before its card (checkpoints only) is not recognised.
    """
    if "discopop-cli" in _front_matter_tags(folder / "README.md"):
        return "align" if (folder / "recipe.yaml").is_file() else "merge"
    if {"prompts", "sampling", "models"} <= _json_keys(folder / "settings.json"):
        return "eval judge"
    if (folder / "archive.jsonl").is_file() and {"recipe", "proposer"} <= _json_keys(folder / "discover.json"):
        return "discover"
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and 'name = "discopop-loss-' in pyproject.read_text(encoding="utf-8", errors="replace"):
        return "discover export"
    return None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _strays(folder: Path, command: str) -> list[str]:
    patterns = (*OWN_ENTRIES.get(command, _MODEL_FILES), *_ALWAYS_OWN)
    names = sorted(entry.name for entry in folder.iterdir())
    return [name for name in names if not any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def check_replaceable_folder(folder: Path, what: str, legacy_files: frozenset[str] = frozenset()) -> None:
    """--force on an existing, non-empty folder: refuse unless discopop wrote it and nobody added to it since.

    `legacy_files`: a command whose earlier output has no card or settings to tell it by (the demo models) names the
    files it wrote; a folder of those files alone is taken as its own."""
    owner = marker_command(folder) or legacy_owner(folder)
    if owner is None and legacy_files and {entry.name for entry in folder.iterdir()} <= legacy_files:
        owner = "demo"
    if owner is None:
        names = sorted(entry.name for entry in folder.iterdir())
        raise UserError(
            f"--force replaces only discopop's own output, and {what} {folder} is not (no {MARKER}); it holds "
            f"{_listing(names)}; move those away or choose another path"
        )
    strays = _strays(folder, owner)
    if strays:
        raise UserError(
            f"--force would delete {_listing(strays)} in {what} {folder}, which discopop did not write; "
            "move them away or choose another path"
        )


# A file's own signature: what discopop writes into each kind of file it makes.
GGUF_KEY = "discopop.exported_by"
PNG_SOFTWARE = "discopop-cli"
_TEXT_SIGNATURES = {"Modelfile": "exported by discopop-cli", "NOTICE": "by discopop-cli"}


def _modelfiles(folder: Path) -> list[Path]:
    """The Modelfiles discopop wrote into `folder`: `Modelfile`, and `Modelfile.TYPE` for several quants."""
    found = [folder / "Modelfile", *sorted(folder.glob("Modelfile.*"))]
    return [path for path in found if path.is_file() and owned_file(path)]


def png_metadata() -> dict[str, str]:
    """savefig(metadata=...) for every PNG the tool draws: what `owned_file` recognises."""
    return {"Software": f"{PNG_SOFTWARE} {tool_version()}"}


def _png_software(path: Path) -> str:
    """The PNG's tEXt Software value, from the chunks before the image data."""
    with path.open("rb") as handle:
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return ""
        for _ in range(64):
            head = handle.read(8)
            if len(head) < 8:
                return ""
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT" or length > 1 << 20:
                return ""
            data = handle.read(length)
            handle.seek(4, os.SEEK_CUR)  # the CRC
            if kind == b"tEXt" and data.startswith(b"Software\0"):
                return data[9:].decode("latin-1")
    return ""


def _gguf_keys(path: Path, wanted: str, *, scan: int = 8) -> str | None:
    """The string value of key `wanted` among the first `scan` metadata keys of a GGUF, else None."""
    scalar_sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with path.open("rb") as handle:
        head = handle.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            return None
        count = struct.unpack("<Q", head[16:24])[0]

        def string() -> bytes:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 1 << 16:
                raise ValueError("long string")
            return handle.read(size)

        try:
            for _ in range(min(count, scan)):
                key = string().decode("utf-8", "replace")
                (kind,) = struct.unpack("<I", handle.read(4))
                if kind == 8:
                    value = string()
                    if key == wanted:
                        return value.decode("utf-8", "replace")
                elif kind in scalar_sizes:
                    handle.seek(scalar_sizes[kind], os.SEEK_CUR)
                else:
                    return None  # an array: the keys discopop writes come before any
        except (struct.error, ValueError):
            return None
    return None


def owned_file(path: Path) -> bool:
    """Whether `path` is a file discopop wrote, by its signature (see the module's docstring)."""
    try:
        if path.suffix.lower() == ".gguf":
            if _gguf_keys(path, GGUF_KEY) is not None:
                return True
            # Exports before the signature: the GGUF that a discopop Modelfile beside it names.
            return any(f"FROM ./{path.name}\n" in m.read_text(encoding="utf-8") for m in _modelfiles(path.parent))
        if path.suffix.lower() == ".png":
            return _png_software(path).startswith(PNG_SOFTWARE)
        if path.name == "LICENSE":  # the license text itself, which a discopop Modelfile beside it quotes
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            return bool(text) and any(text in m.read_text(encoding="utf-8") for m in _modelfiles(path.parent))
        signature = _TEXT_SIGNATURES.get(path.name.split(".")[0] if path.name.startswith("Modelfile.") else path.name)
        if signature is not None:
            with path.open(encoding="utf-8", errors="replace") as handle:
                return signature in handle.read(4096)
    except OSError:
        return False
    return False


# --- destinations ----------------------------------------------------------------------------------------------


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


def check_destination(
    path: Path, *, force: bool, what: str = "output directory", legacy_files: frozenset[str] = frozenset()
) -> None:
    """Refuse to replace an existing output unless --force, --force on what discopop did not write, and an output
    that cannot be written."""
    if path.is_file() and not path.is_dir() and what == "output directory":
        raise UserError(f"{what} {path} is a file; choose another path with --output-dir")
    check_writable(path)
    exists = path.exists() and (path.is_file() or any(path.iterdir()))
    if not exists:
        return
    if not force:
        raise UserError(f"{what} {path} already exists; pass --force to replace it or choose another path")
    if path.is_dir():
        check_replaceable_folder(path, what, legacy_files)
    elif not owned_file(path):
        raise UserError(
            f"--force replaces only discopop's own output, and {what} {path} was not written by discopop; "
            "move it away or choose another path"
        )


# --- staging ---------------------------------------------------------------------------------------------------


def staging_name(destination: Path, kind: str = "partial") -> Path:
    """A hidden name beside `destination`, unique to this run: `.NAME.KIND-PID-TOKEN`."""
    return destination.parent / f".{destination.name}.{kind}-{os.getpid()}-{secrets.token_hex(3)}"


def staging_dir(destination: Path) -> Path:
    """A fresh directory beside `destination`, on the same filesystem so the final rename is atomic."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_name(destination)
    staging.mkdir()
    return staging


def promote(staging: Path, destination: Path) -> None:
    """Move a completed staging directory into place, replacing what --force allowed to replace."""
    if destination.exists():
        retired = staging_name(destination, "old")
        destination.rename(retired)
        staging.rename(destination)
        if retired.is_dir() and not retired.is_symlink():
            shutil.rmtree(retired)
        else:
            retired.unlink()
    else:
        staging.rename(destination)


@contextlib.contextmanager
def staged_dir(destination: Path, *, command: str | None = None) -> Iterator[Path]:
    """A fresh folder beside `destination` to write into; moved into place when the block completes, removed if not.

    With `command`, the folder gets the ownership marker, so a later --force may replace it."""
    staging = staging_dir(destination)
    try:
        if command is not None:
            mark(staging, command)
        yield staging
        promote(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed onto `path` when the block completes, removed if not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = staging_name(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
