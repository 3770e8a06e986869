"""The run folder: its settings, and append-only JSONL caches of answers and judgements.

Every answer and every judge call is one line, flushed and fsynced before the next starts, so a run killed at
any moment (or whose judge server dies) loses at most the item in flight. A line cut off by the kill is dropped
when the file is next opened. `--resume` reads the caches and does only what is missing.

    DIR/settings.json                  what the answers depend on (prompts, models, sampling)
    DIR/answers/NAME.jsonl             one answer per prompt and model
    DIR/judgements/MODE-JUDGE.jsonl    one line per judge call: a verdict, or the error it ended with
    DIR/results.json                   the statistics of the last run
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.outputs import check_replaceable_folder, check_writable, mark, staged_file


def slug(text: str) -> str:
    """A file-name-safe form of a model or judge name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "x"


class JsonlCache:
    """Records keyed by `key`; only records without an `error` count as done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        self.lines = 0
        if path.is_file():
            self._read()

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A line cut off by a kill: drop it, so the next append starts on a fresh line.
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(raw))
        for line in raw.decode("utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            self.lines += 1
            key = record["key"]
            if "error" in record:
                if key not in self.done:
                    self.failed[key] = record
            else:
                self.done[key] = record
                self.failed.pop(key, None)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.lines += 1
        if "error" in record:
            self.failed[record["key"]] = record
        else:
            self.done[record["key"]] = record
            self.failed.pop(record["key"], None)


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def answers(self, model_name: str) -> JsonlCache:
        return JsonlCache(self.root / "answers" / f"{slug(model_name)}.jsonl")

    def judgements(self, mode: str, judge_name: str) -> JsonlCache:
        return JsonlCache(self.root / "judgements" / f"{mode}-{slug(judge_name)}.jsonl")

    def check(self, *, resume: bool, force: bool) -> None:
        """Before anything is written: refuse to mix runs, to resume nothing, or to replace without --force."""
        if resume and force:
            raise UserError("--resume and --force contradict each other; use --resume to continue, --force to restart")
        if self.root.is_file():
            raise UserError(f"output directory {self.root} is a file; choose another path with --output-dir")
        check_writable(self.root)
        busy = self.root.is_dir() and any(self.root.iterdir())
        if resume and not busy:
            raise UserError(f"--resume: {self.root} holds no earlier run; drop --resume to start one there")
        if busy and not resume and not force:
            raise UserError(
                f"output directory {self.root} already holds a run; pass --resume to continue it, "
                "--force to start again, or choose another --output-dir"
            )
        if busy and force:
            check_replaceable_folder(self.root, "output directory")
        if busy and resume and not self.settings_path.is_file():
            raise UserError(f"--resume: {self.root} has no settings.json, so it is not a judge run; choose its folder")

    def merged_settings(self, settings: dict[str, Any], *, resume: bool) -> dict[str, Any]:
        """The settings to record; for --resume, refused when the answers would be made differently."""
        if not resume:
            return settings
        earlier = json.loads(self.settings_path.read_text(encoding="utf-8"))
        changed = [key for key in sorted(set(earlier) | set(settings)) if earlier.get(key) != settings.get(key)]
        changed = [key for key in changed if key != "models"]
        models = earlier.get("models", {})
        clash = [name for name, source in settings["models"].items() if models.get(name, source) != source]
        if changed or clash:
            what = ", ".join(changed + [f"model {name}" for name in clash])
            raise UserError(
                f"--resume: {what} differ from the run in {self.root}; resume with the same settings, "
                "or start a new run with --force or another --output-dir"
            )
        # A model added on resume is answered and judged; one left out keeps its answers for later.
        return {**settings, "models": {**models, **settings["models"]}}

    def start(self, settings: dict[str, Any], *, force: bool) -> None:
        """Write the run's settings, emptying the folder first for --force."""
        if force and self.root.exists():
            shutil.rmtree(self.root)  # discopop's own run: RunFolder.check made sure
        self.root.mkdir(parents=True, exist_ok=True)
        mark(self.root, "eval judge")
        write_json(self.settings_path, settings)


def _strict(value: Any) -> Any:
    """JSON has no NaN or infinity: a number that is not finite (a rate over no verdicts) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(_strict(value), indent=2, ensure_ascii=False, allow_nan=False)
    with staged_file(path) as partial:
        partial.write_text(text + "\n", encoding="utf-8")
