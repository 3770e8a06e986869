"""Bad input to every command: the exit code, one `error:` line that names the problem, no traceback, nothing written.

Each case prepares files under its own temporary folder (`{tmp}` in a path or a file's text is that folder), runs
one command through the CLI with that folder as the current directory, and checks the folder before and after.
The align/sft models here are folders a model load would fail on (a bare `config.json`): a case that reached the
model would fail with another message, so the checks are shown to run before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
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


# A model folder that passes the checks made before loading, and that a load would fail on (empty weights, no
# tokenizer): a case that got as far as loading would fail with another message.
UNLOADABLE_MODEL = {"model/config.json": "{}", "model/model.safetensors": b""}
PICKLED_MODEL = {"model/model.safetensors": None, "model/pytorch_model.bin": b"\x80\x02}q\x00."}
# The tiny model with its weights file cut short: found by the early checks, refused by the load itself.
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

CASES = [
    # ---- align -------------------------------------------------------------------------------------------------
    case("align-malformed-yaml", ALIGN, {"recipe.yaml": "model_name_or_path: [unclosed\n"}, 2, "invalid YAML at line"),
    case(
        "align-list-not-mapping",
        ALIGN,
        {"recipe.yaml": "- model_name_or_path: x\n- beta: 0.1\n"},
        2,
        "a recipe is a mapping of keys to values, got list",
    ),
    case(
        "align-wrong-type-learning-rate",
        ALIGN,
        align_files(learning_rate="fast"),
        2,
        "'learning_rate' must be a number, got 'fast'",
    ),
    case(
        "align-wrong-type-epochs-list",
        ALIGN,
        align_files(num_train_epochs=[1]),
        2,
        "'num_train_epochs' must be a number, got [1]",
    ),
    case(
        "align-wrong-type-in-a-list",
        ALIGN,
        align_files(loss_type=["discopop", "cell"], loss_weights=[1, "nope"]),
        2,
        "'loss_weights' must be a list of numbers, got [1, 'nope']",
    ),
    case("align-unknown-key", ALIGN, align_files(learning_rat=1e-5), 2, "did you mean 'learning_rate'"),
    case("align-unknown-loss", ALIGN, align_files(loss_type="discopopp"), 2, "unknown loss `discopopp`: did you mean"),
    case(
        "align-user-loss-missing-module",
        ALIGN,
        align_files(loss_type="no_such_module_xyz:loss"),
        2,
        "cannot import module `no_such_module_xyz`",
    ),
    case(
        "align-missing-dataset",
        ALIGN,
        {**align_files(), "pairs.jsonl": None},
        2,
        "pairs.jsonl not found",
    ),
    case("align-empty-dataset", ALIGN, {**align_files(), "pairs.jsonl": ""}, 2, "pairs.jsonl is empty"),
    case(
        "align-missing-rejected-column",
        ALIGN,
        {**align_files(), "pairs.jsonl": jsonl([{"prompt": "q", "chosen": "a"}])},
        2,
        "align needs columns ['chosen', 'rejected']",
    ),
    case(
        "align-unsupported-data-file",
        ALIGN,
        {**align_files(), "recipe.yaml": recipe("pairs.txt"), "pairs.txt": "hello\n"},
        2,
        "unsupported type",
    ),
    case(
        "align-missing-model",
        ALIGN,
        {**align_files(), "model": None},
        2,
        "model_name_or_path '{tmp}/model' is not a directory",
    ),
    case(
        "align-pickle-weights",
        ALIGN,
        {**align_files(), **PICKLED_MODEL},
        2,
        "use_safetensors: false",
    ),
    case(
        "align-damaged-weights",
        ALIGN,
        {"recipe.yaml": recipe("pairs.jsonl"), "pairs.jsonl": jsonl(PAIRS), **DAMAGED_MODEL},
        2,
        "could not load the model {tmp}/model: Error while deserializing header",
    ),
    case(
        "align-output-under-a-file",
        ALIGN,
        {**align_files(output_dir="{tmp}/afile/out"), "afile": "not a folder"},
        2,
        "afile is a file",
    ),
    case(
        "align-existing-output",
        ALIGN,
        {**align_files(), "out/keep.txt": "mine"},
        2,
        "already exists",
    ),
    case("align-set-without-equals", [*ALIGN, "--set", "learning_rate"], align_files(), 2, "expected KEY=VALUE"),
    case(
        "align-set-unknown-key",
        [*ALIGN, "--set", "learnin_rate=1e-5"],
        align_files(),
        2,
        "unknown key 'learnin_rate'; did you mean 'learning_rate'",
    ),
    case(
        "align-set-token-not-echoed",
        [*ALIGN, "--set", "hub_token=[hf_SECRET"],
        align_files(),
        2,
        "--set hub_token: the value is not valid YAML",
        hidden="hf_SECRET",
    ),
    case("align-missing-recipe", ["align", "{tmp}/nowhere.yaml"], {}, 2, "nowhere.yaml not found"),
    case("align-recipe-is-a-directory", ALIGN, {"recipe.yaml": DIR}, 2, "recipe.yaml is a directory"),
    case("align-recipe-not-utf8", ALIGN, {"recipe.yaml": b"\xff\xfebeta: 1\n"}, 2, "cannot be read as UTF-8 text"),
    case("align-negative-beta", ALIGN, align_files(beta=-0.05), 2, "beta must be positive, got -0.05"),
    case(
        "align-zero-tau-in-loss-kwargs",
        [*ALIGN, "--set", "loss_kwargs.discopop_tau=0"],
        align_files(loss_type="discopop"),
        2,
        "loss_kwargs.discopop_tau must be positive, got 0",
    ),
    case(
        "align-datasets-not-a-list",
        [*ALIGN, "--set", "dataset_mixture.datasets=3"],
        align_files(),
        2,
        "dataset_mixture 'datasets' must be a list of datasets",
    ),
    # ---- sft ---------------------------------------------------------------------------------------------------
    case("sft-malformed-yaml", SFT, {"recipe.yaml": "model_name_or_path: x\n  beta: : 1\n"}, 2, "invalid YAML"),
    case("sft-scalar-not-mapping", SFT, {"recipe.yaml": "just words\n"}, 2, "a recipe is a mapping"),
    case("sft-wrong-type-bool", SFT, sft_files(packing=[True]), 2, "'packing' must be true or false, got [True]"),
    case("sft-wrong-type-int", SFT, sft_files(max_steps="ten"), 2, "'max_steps' must be an integer, got 'ten'"),
    case(
        "sft-token-wrong-type-not-echoed",
        SFT,
        sft_files(hub_token=["hf_SECRET"]),
        2,
        "'hub_token' must be a string, got a list",
        hidden="hf_SECRET",
    ),
    case("sft-unknown-key", SFT, sft_files(packign=True), 2, "unknown key 'packign'; did you mean 'packing'"),
    case("sft-missing-dataset", SFT, {**sft_files(), "chat.jsonl": None}, 2, "chat.jsonl not found"),
    case(
        "sft-empty-dataset",
        SFT,
        {**sft_files(), "recipe.yaml": recipe("chat.json"), "chat.json": "[]"},
        2,
        "chat.json is empty (no rows)",
    ),
    case(
        "sft-rows-not-objects",
        SFT,
        {**sft_files(), "chat.jsonl": "[1, 2]\n"},
        2,
        "holds lists, not JSON objects",
    ),
    case(
        "sft-missing-messages-column",
        SFT,
        {**sft_files(), "chat.jsonl": jsonl([{"question": "q", "answer": "a"}])},
        2,
        "sft needs a 'messages' column",
    ),
    case("sft-missing-model", SFT, {**sft_files(), "model": None}, 2, "is not a directory"),
    case(
        "sft-pickle-weights",
        SFT,
        {**sft_files(), **PICKLED_MODEL},
        2,
        "safetensors",
    ),
    case(
        "sft-config-without-model-type",
        SFT,
        {"recipe.yaml": recipe("chat.jsonl"), "chat.jsonl": jsonl(CHATS), "model": TINY, "model/config.json": "{}"},
        2,
        "could not read the model config of {tmp}/model: Unrecognized model",
    ),
    case(
        "sft-damaged-weights",
        SFT,
        {"recipe.yaml": recipe("chat.jsonl"), "chat.jsonl": jsonl(CHATS), **DAMAGED_MODEL},
        2,
        "could not load the model {tmp}/model: Error while deserializing header",
    ),
    case(
        "sft-output-under-a-file",
        [*SFT, "--output-dir", "{tmp}/afile/out"],
        {**sft_files(), "afile": "x"},
        2,
        "afile is a file",
    ),
    case("sft-existing-output", SFT, {**sft_files(), "out/keep.txt": "mine"}, 2, "already exists"),
    case("sft-set-empty-key", [*SFT, "--set", "=3"], sft_files(), 2, "expected KEY=VALUE"),
    case(
        "sft-mixture-seed-not-an-integer",
        [*SFT, "--set", "dataset_mixture.seed=abc"],
        sft_files(),
        2,
        "dataset_mixture seed must be an integer, got 'abc'",
    ),
    case(
        "sft-chat-template-path-missing",
        SFT,
        sft_files(chat_template_path="{tmp}/nowhere.jinja"),
        2,
        "chat_template_path '{tmp}/nowhere.jinja' is not a file",
    ),
    # ---- merge -------------------------------------------------------------------------------------------------
    case("merge-missing-adapter", ["merge", "{tmp}/adapter", *MERGE_OUT], {}, 2, "adapter {tmp}/adapter not found"),
    case(
        "merge-no-adapter-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/notes.txt": "hi"},
        2,
        "has no adapter_config.json",
    ),
    case(
        "merge-full-model-as-adapter",
        ["merge", "{tmp}/model", *MERGE_OUT],
        {"model": TINY},
        2,
        "a full model, not a LoRA adapter",
    ),
    case(
        "merge-broken-adapter-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/adapter_config.json": "{not json", "adapter/adapter_model.safetensors": b""},
        2,
        "adapter_config.json is not valid JSON",
    ),
    case(
        "merge-pickle-adapter",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"adapter/adapter_config.json": '{"peft_type": "LORA"}', "adapter/adapter_model.bin": b"\x80\x02."},
        2,
        "discopop merge reads safetensors only",
    ),
    case(
        "merge-missing-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {},
        2,
        "base model {tmp}/gone not found",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "gone")),
    ),
    case(
        "merge-mismatched-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY},
        2,
        "the adapter was trained on a different base",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base"), in_features=32),
    ),
    case(
        "merge-pickle-base",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base/config.json": "{}", "base/pytorch_model.bin": b"\x80\x02."},
        2,
        "has no safetensors weights (it has pytorch_model.bin)",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-bad-dtype",
        ["merge", "{tmp}/adapter", *MERGE_OUT, "--dtype", "int8"],
        {},
        2,
        "--dtype int8 is not one of",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-bad-shard-size",
        ["merge", "{tmp}/adapter", *MERGE_OUT, "--max-shard-size", "lots"],
        {},
        2,
        "--max-shard-size",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-output-under-a-file",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/afile/merged"],
        {"base": TINY, "afile": "x"},
        2,
        "afile is a file",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-existing-output",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY, "out/keep.txt": "mine"},
        2,
        "already exists",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-damaged-tokenizer-config",
        ["merge", "{tmp}/adapter", *MERGE_OUT],
        {"base": TINY, "adapter/tokenizer_config.json": '{"chat_template": '},
        2,
        "adapter/tokenizer_config.json is not valid JSON",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    case(
        "merge-output-over-its-adapter",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/adapter", "--force"],
        {"base": TINY},
        2,
        "would replace the adapter",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "base")),
    ),
    # ---- export ------------------------------------------------------------------------------------------------
    case("export-without-gguf", ["export", "{tmp}/model"], {"model": TINY}, 2, "choose an export format: --gguf"),
    case(
        "export-unknown-quant",
        ["export", "{tmp}/model", "--gguf", "--quant", "q9_x"],
        {"model": TINY},
        2,
        "unknown --quant 'q9_x'; choose one of",
    ),
    case("export-missing-model", ["export", "{tmp}/model", "--gguf"], {}, 2, "model directory {tmp}/model does not"),
    case(
        "export-not-a-model",
        ["export", "{tmp}/model", "--gguf"],
        {"model": DIR},
        2,
        "is not a Hugging Face model directory (no config.json)",
    ),
    case(
        "export-broken-config",
        ["export", "{tmp}/model", "--gguf"],
        {"model/config.json": "{broken"},
        2,
        "config.json is not valid JSON",
    ),
    case(
        "export-tokenizer-config-not-an-object",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/tokenizer_config.json": "[1, 2]"},
        2,
        "tokenizer_config.json holds a list, not a JSON object; restore the model's copy of it",
    ),
    case(
        "export-pickle-weights",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/model.safetensors": None, "model/pytorch_model.bin": b"\x80\x02."},
        2,
        "has no .safetensors weights",
    ),
    case(
        "export-output-under-a-file",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/afile/m.gguf"],
        {"model": TINY, "afile": "x"},
        2,
        "afile is a file",
    ),
    case(
        "export-output-not-gguf",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.bin"],
        {"model": TINY},
        2,
        "neither an existing directory nor a .gguf file",
    ),
    case(
        "export-existing-output",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "out/m.gguf": b"old"},
        2,
        "already exists",
    ),
    case(
        "export-system-without-template",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "--system", "Be brief.", "-o", "{tmp}/out/m.gguf"],
        {"model": TINY, "model/chat_template.jinja": None},
        2,
        "has no chat template, so --system has no turn to go in",
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root`: a folder as 'dir', a file as its size and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            found[key] = "dir"
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


def test_there_are_enough_cases() -> None:
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))
    for command in ("align", "sft", "merge", "export"):
        assert sum(i.startswith(command + "-") for i in ids) >= 5, command


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    flat = " ".join(output.split())
    assert bad.message.replace("{tmp}", str(tmp)) in flat, output
    assert bad.hidden is None or bad.hidden not in output

    assert snapshot(tmp_path) == before, "something was written"
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name or ".old-" in p.name]
    # Nothing heavy ran: every refusal comes before a model, a dataset or the weights are loaded.
    assert seconds < 10, f"{seconds:.1f} s"
