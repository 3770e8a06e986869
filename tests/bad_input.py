"""What every bad-input suite shares: the case type, the files a case lays out, and the check itself.

Each case prepares files under its own temporary folder (`{tmp}` in a path or a file's text is that folder), runs
one command through the CLI with that folder as the current directory, and checks the folder before and after.
The align/sft models here are folders a model load would fail on (a bare `config.json`): a case that reached the
model would fail with another message, so the checks are shown to run before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()

PAIRS = [
    {
        "chosen": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"good {i}"}],
        "rejected": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"bad {i}"}],
    }
    for i in range(4)
]
CHATS = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(4)
]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def recipe(data: str, **changes: Any) -> str:
    """A recipe on `{tmp}/model` and one local data file, writing to `{tmp}/out`; `None` removes a key."""
    body = {
        "model_name_or_path": "{tmp}/model",
        "dataset_mixture": {"datasets": [{"id": "{tmp}/" + data}], "seed": 0},
        "max_steps": 1,
        "report_to": "none",
        "output_dir": "{tmp}/out",
        **changes,
    }
    return yaml.safe_dump({k: v for k, v in body.items() if v is not None}, sort_keys=False)


# A safetensors file holding no tensor: its header is sound, so the checks made before loading pass it.
EMPTY_SAFETENSORS = (8).to_bytes(8, "little") + b"{}      "
# A model folder that passes the checks made before loading, and that a load would fail on (no tensors, no
# tokenizer): a case that got as far as loading would fail with another message.
UNLOADABLE_MODEL = {"model/config.json": "{}", "model/model.safetensors": EMPTY_SAFETENSORS}
PICKLED_MODEL = {"model/model.safetensors": None, "model/pytorch_model.bin": b"\x80\x02}q\x00."}
# The tiny model with its weights file cut short: refused by the header check made before loading.
DAMAGED_MODEL = {"model": "@tiny", "model/model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"}


def align_files(**changes: Any) -> dict[str, Any]:
    """A recipe whose checks pass, on preference pairs and an unloadable model."""
    return {"recipe.yaml": recipe("pairs.jsonl", **changes), **UNLOADABLE_MODEL, "pairs.jsonl": jsonl(PAIRS)}


def sft_files(**changes: Any) -> dict[str, Any]:
    return {"recipe.yaml": recipe("chat.jsonl", **changes), **UNLOADABLE_MODEL, "chat.jsonl": jsonl(CHATS)}


TINY = "@tiny"  # a file spec: a copy of the tiny model (safetensors, tokenizer, chat template)
DIR = "@dir"  # a file spec: an empty folder


def lora_adapter(folder: Path, *, base: str, in_features: int = 64) -> None:
    """A LoRA adapter on q_proj of layer 0; `in_features` other than the tiny model's 64 makes it not fit."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": base, "r": 2, "lora_alpha": 4}
    config["target_modules"] = ["q_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{prefix}.lora_A.weight": torch.zeros(2, in_features), f"{prefix}.lora_B.weight": torch.zeros(64, 2)}
    save_file(tensors, folder / "adapter_model.safetensors")


@dataclass
class Case:
    args: list[str]
    files: dict[str, Any]
    code: int
    message: str
    build: Callable[[Path], None] | None = None
    hidden: str | None = None  # a secret the output must not show


def case(id: str, args: list[str], files: dict[str, Any], code: int, message: str, **kw: Any) -> Any:
    return pytest.param(Case(args, files, code, message, **kw), id=id)


ALIGN = ["align", "{tmp}/recipe.yaml"]
SFT = ["sft", "{tmp}/recipe.yaml"]
MERGE_OUT = ["-o", "{tmp}/out"]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root`: a folder as 'dir', a symlink as its target, a file as its size and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            found[key] = "dir"
        elif not path.is_file():
            found[key] = "special"  # a FIFO: reading it would wait for a writer
        else:
            found[key] = f"{path.stat().st_size}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    return found


def prepare(tmp: Path, files: dict[str, Any], tiny_model_dir: Path) -> None:
    for name, spec in files.items():
        if spec == TINY:
            shutil.copytree(tiny_model_dir, tmp / name, ignore=shutil.ignore_patterns("*.tmp"))
    for name, spec in files.items():
        path = tmp / name
        if spec == TINY:
            continue
        if spec is None:
            if path.is_dir():
                shutil.rmtree(path)
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec == DIR:
            path.mkdir(exist_ok=True)
        elif isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            path.write_text(spec.replace("{tmp}", str(tmp)), encoding="utf-8")


def check_refused(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one case: its exit code, one `error:` line with its message, no traceback, nothing written, fast."""
    tmp = tmp_path / "work"
    tmp.mkdir()
    prepare(tmp, bad.files, tiny_model_dir)
    if bad.build is not None:
        bad.build(tmp)
    monkeypatch.chdir(tmp)  # a default output (outputs/..., MODEL-gguf/) would land here and be seen
    before = snapshot(tmp_path)

    args = [arg.replace("{tmp}", str(tmp)) for arg in bad.args]
    started = time.monotonic()
    result = runner.invoke(app, args)
    seconds = time.monotonic() - started

    output = result.output
    # An exception that escaped the CLI is a traceback for the user, whatever CliRunner prints.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output, output
    assert result.exit_code == bad.code, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert len(errors[0]) <= 700, f"an error line of {len(errors[0])} characters"  # cut to a readable length
    flat = " ".join(output.split())
    assert bad.message.replace("{tmp}", str(tmp)) in flat, output
    assert bad.hidden is None or bad.hidden not in output

    assert snapshot(tmp_path) == before, "something was written"
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name or ".old-" in p.name]
    # Nothing heavy ran: every refusal comes before a model, a dataset or the weights are loaded.
    assert seconds < 10, f"{seconds:.1f} s"


def check_case_ids(cases: list[Any], commands: tuple[str, ...], at_least: int = 5) -> None:
    ids = [param.id for param in cases]
    assert len(ids) == len(set(ids))
    for command in commands:
        assert sum(i.startswith(command + "-") for i in ids) >= at_least, command


def forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way a run loads a model, a tokenizer or a dataset raise, so a case that got that far fails on it
    (an AssertionError escapes the CLI, which `check_refused` reports) instead of passing with another message."""
    import datasets
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a model, tokenizer or dataset was loaded: {args[1:2] or args[:1]}")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(_BaseAutoModelClass, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr(datasets, "load_from_disk", refuse)


# ---- files that lie: what the fault and safetensors suites build -------------------------------------------------


def safetensors_bytes(header: dict[str, Any], data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file from a header and data as given, however wrong; `length` overrides the header length."""
    encoded = json.dumps(header).encode()
    return (len(encoded) if length is None else length).to_bytes(8, "little") + encoded + data


def rewrite_header(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a real safetensors file's header through `change`, keeping its data bytes as they are."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    change(header)
    path.write_bytes(safetensors_bytes(header, raw[8 + length :]))


def lying_offsets(header: dict[str, Any]) -> None:
    """Every tensor claims the data's first bytes: [0, n], the header of a file whose tensors all read the same."""
    for name, info in header.items():
        if name != "__metadata__":
            info["data_offsets"] = [0, info["data_offsets"][1] - info["data_offsets"][0]]


# A PNG that discopop did not draw (no Software text of its own): a user's picture.
USER_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 17 + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def discover_files(model: str = "{tmp}/model", data: str = "{tmp}/pairs.jsonl") -> dict[str, Any]:
    """A discovery set-up whose checks pass: an align recipe with an eval split on `model` and `data`, an empty
    proposer folder. The model is a copy of the tiny one unless the caller says otherwise."""
    body = {
        "model_name_or_path": model,
        "dataset_mixture": {"datasets": [{"id": data}], "seed": 0, "test_split_size": 2},
        "loss_type": "discopop",
        "max_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 1,
        "report_to": "none",
    }
    return {"recipe.yaml": yaml.safe_dump(body), "model": TINY, "pairs.jsonl": jsonl(PAIRS), "inbox": DIR}


def scored_archive(fitness: Any = 0.5) -> str:
    """One archive line of a scored candidate, as discover writes it."""
    entry = {
        "id": "g001-abc",
        "generation": 1,
        "origin": "a.py",
        "status": "scored",
        "fitness": fitness,
        "metrics": {"reward_margin": 0.1},
        "code": "def candidate(a, b, c, d, *, beta):\n    return a\n",
        "function": "candidate",
    }
    return json.dumps(entry) + "\n"
