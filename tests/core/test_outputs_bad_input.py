"""Outputs never swallow inputs, and `--force` replaces only discopop's own output: for every command with --force,
an output that is an input, lies inside one or holds one is refused in one line naming both (symlinks resolved), and
--force on something discopop did not write is refused listing what is there. Nothing is written either way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from bad_input import (
    ALIGN,
    DIR,
    EMPTY_SAFETENSORS,
    PAIRS,
    SFT,
    TINY,
    USER_PNG,
    Case,
    align_files,
    case,
    check_case_ids,
    check_refused,
    discover_files,
    jsonl,
    lora_adapter,
    recipe,
    scored_archive,
    sft_files,
)

FORCE = "--force"
NOT_OURS = "--force replaces only discopop's own output"
JUDGE = "openai:judge@http://127.0.0.1:9/v1"  # never reached: every case fails before any contact
PROMPTS = "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(3))


def judge(*args: str) -> list[str]:
    models = ["--models", "{tmp}/a,{tmp}/b", "--judge", JUDGE, "--prompts", "{tmp}/prompts.jsonl"]
    return ["eval", "judge", *models, *args]


def judge_files(**extra: Any) -> dict[str, Any]:
    """Two model folders a check passes (a config and a sound, empty weights file each) and a prompts file."""
    models = {f"{m}/{name}": body for m in "ab" for name, body in (("config.json", "{}"), ("model.safetensors", b""))}
    models = {k: (EMPTY_SAFETENSORS if k.endswith(".safetensors") else v) for k, v in models.items()}
    return {**models, "prompts.jsonl": PROMPTS, **extra}


def symlink(link: str, target: str) -> Any:
    return lambda tmp: os.symlink(tmp / target, tmp / link)


DISCOVER = ["discover", "{tmp}/recipe.yaml", "--proposer", "dir:{tmp}/inbox"]
ADAPTER = {"base": TINY}


def adapter(tmp: Path) -> None:
    lora_adapter(tmp / "adapter", base=str(tmp / "base"))


CASES = [
    # ---- sft and align: output_dir against the model, the data and the recipe -------------------------------------
    case(
        "sft-force-output-is-its-model",
        [*SFT, FORCE],
        sft_files(output_dir="{tmp}/model"),
        2,
        "output_dir {tmp}/model is the model itself: an output never replaces or holds an input",
    ),
    case(
        "sft-force-output-holds-its-recipe",
        [*SFT, FORCE],
        sft_files(output_dir="{tmp}"),
        2,
        "output_dir {tmp} contains the recipe {tmp}/recipe.yaml",
    ),
    case(
        "align-force-output-is-its-model",
        [*ALIGN, FORCE],
        align_files(output_dir="{tmp}/model"),
        2,
        "output_dir {tmp}/model is the model itself",
    ),
    case(
        "align-force-output-holds-its-data",
        [*ALIGN, FORCE],
        {**align_files(output_dir="{tmp}/data"), "recipe.yaml": recipe("data/pairs.jsonl", output_dir="{tmp}/data")}
        | {"data/pairs.jsonl": jsonl(PAIRS)},
        2,
        "output_dir {tmp}/data contains the dataset {tmp}/data/pairs.jsonl",
    ),
    case(
        "align-output-inside-its-model",
        [*ALIGN, "--output-dir", "{tmp}/model/run"],
        align_files(),
        2,
        "output_dir {tmp}/model/run lies inside the model {tmp}/model",
    ),
    case(
        "align-force-output-is-a-link-to-its-model",
        [*ALIGN, "--output-dir", "{tmp}/link", FORCE],
        align_files(),
        2,
        "output_dir {tmp}/link is the model itself",
        build=symlink("link", "model"),
    ),
    case(
        "align-force-not-discopops-folder",
        [*ALIGN, FORCE],
        {**align_files(), "out/thesis.tex": "years of work"},
        2,
        f"{NOT_OURS}, and output directory {{tmp}}/out is not (no .discopop-output.json); it holds thesis.tex",
    ),
    # ---- merge ---------------------------------------------------------------------------------------------------
    case(
        "merge-force-output-is-its-base",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/base", FORCE],
        ADAPTER,
        2,
        "--output {tmp}/base is the base model itself",
        build=adapter,
    ),
    case(
        "merge-force-output-inside-its-adapter",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/adapter/merged", FORCE],
        ADAPTER,
        2,
        "--output {tmp}/adapter/merged lies inside the adapter {tmp}/adapter",
        build=adapter,
    ),
    case(
        "merge-force-output-holds-its-base",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/models", FORCE, "--base", "{tmp}/models/base"],
        {"models/base": TINY},
        2,
        "--output {tmp}/models contains the base model {tmp}/models/base",
        build=lambda tmp: lora_adapter(tmp / "adapter", base=str(tmp / "models" / "base")),
    ),
    case(
        "merge-force-not-discopops-folder",
        ["merge", "{tmp}/adapter", "-o", "{tmp}/mine", FORCE],
        {**ADAPTER, "mine/notes.txt": "mine", "mine/photo.jpg": b"\xff\xd8"},
        2,
        f"{NOT_OURS}, and output {{tmp}}/mine is not (no .discopop-output.json); it holds notes.txt, photo.jpg",
        build=adapter,
    ),
    # ---- export --------------------------------------------------------------------------------------------------
    case(
        "export-force-output-inside-its-model",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/model/x.gguf", FORCE],
        {"model": TINY},
        2,
        "--output {tmp}/model/x.gguf lies inside the model {tmp}/model",
    ),
    case(
        "export-force-not-discopops-gguf",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", "-o", "{tmp}/llama.gguf", FORCE],
        {"model": TINY, "llama.gguf": b"GGUF\x03\x00\x00\x00" + b"\x00" * 16},
        2,
        f"{NOT_OURS}, and output file {{tmp}}/llama.gguf was not written by discopop",
    ),
    case(
        "export-force-not-discopops-modelfile",
        ["export", "{tmp}/model", "--gguf", "--quant", "f16", FORCE],
        {"model": TINY, "model-gguf/Modelfile": "FROM ./my-own.gguf\n"},
        2,
        f"{NOT_OURS}, and Modelfile {{tmp}}/model-gguf/Modelfile was not written by discopop",
    ),
    # ---- losses --plot ---------------------------------------------------------------------------------------------
    case(
        "losses-plot-force-not-discopops-png",
        ["losses", "discopop", "--plot", "{tmp}/holiday.png", FORCE],
        {"holiday.png": USER_PNG},
        2,
        f"{NOT_OURS}, and --plot file {{tmp}}/holiday.png was not written by discopop",
    ),
    # ---- eval judge ------------------------------------------------------------------------------------------------
    case(
        "judge-force-output-is-a-model",
        judge("-o", "{tmp}/a", FORCE),
        judge_files(),
        2,
        "--output-dir {tmp}/a is the model itself",
    ),
    case(
        "judge-force-output-holds-the-prompts",
        [*judge()[:6], "--prompts", "{tmp}/p/prompts.jsonl", "-o", "{tmp}/p", FORCE],
        {**judge_files(), "p/prompts.jsonl": PROMPTS},
        2,
        "--output-dir {tmp}/p contains the prompts file {tmp}/p/prompts.jsonl",
    ),
    case(
        "judge-force-not-discopops-folder",
        judge("-o", "{tmp}/results", FORCE),
        {**judge_files(), "results/budget.xlsx": b"PK\x03\x04"},
        2,
        f"{NOT_OURS}, and output directory {{tmp}}/results is not",
    ),
    case(
        "judge-plot-force-not-discopops-png",
        judge("-o", "{tmp}/run", "--plot", "{tmp}/holiday.png", FORCE),
        {**judge_files(), "holiday.png": USER_PNG},
        2,
        f"{NOT_OURS}, and --plot file {{tmp}}/holiday.png was not written by discopop",
    ),
    # ---- discover run / report / export ----------------------------------------------------------------------------
    case(
        "discover-force-out-holds-its-recipe",
        [*DISCOVER, "--out", "{tmp}", FORCE],
        discover_files(),
        2,
        "--out {tmp} contains the recipe {tmp}/recipe.yaml",
    ),
    case(
        "discover-force-out-is-its-proposer-folder",
        [*DISCOVER, "--out", "{tmp}/inbox", FORCE],
        {**discover_files(), "inbox/mine.py": "def loss(): ...\n"},
        2,
        "--out {tmp}/inbox is the proposer folder itself",
    ),
    case(
        "discover-force-out-holds-its-data",
        [*DISCOVER, "--out", "{tmp}/data", FORCE],
        {**discover_files(data="{tmp}/data/pairs.jsonl"), "data/pairs.jsonl": jsonl(PAIRS)},
        2,
        "--out {tmp}/data contains the dataset {tmp}/data/pairs.jsonl",
    ),
    case(
        "discover-force-not-discopops-folder",
        [*DISCOVER, "--out", "{tmp}/project", FORCE],
        {**discover_files(), "project/README.md": "# my project\n", "project/src": DIR},
        2,
        f"{NOT_OURS}, and --out folder {{tmp}}/project is not (no .discopop-output.json); it holds README.md, src",
    ),
    case(
        "discover-report-plot-force-not-discopops-png",
        ["discover", "report", "{tmp}/run", "--plot", "{tmp}/holiday.png", FORCE],
        {"run/archive.jsonl": scored_archive(), "holiday.png": USER_PNG},
        2,
        f"{NOT_OURS}, and --plot file {{tmp}}/holiday.png was not written by discopop",
    ),
    case(
        "discover-export-force-output-is-the-run",
        ["discover", "export", "{tmp}/run", "--name", "found_loss", "-o", "{tmp}/run", FORCE],
        {"run/archive.jsonl": scored_archive()},
        2,
        "--output {tmp}/run contains the archive {tmp}/run/archive.jsonl",
    ),
    case(
        "discover-export-force-not-discopops-folder",
        ["discover", "export", "{tmp}/run", "--name", "found_loss", "-o", "{tmp}/pkg", FORCE],
        {"run/archive.jsonl": scored_archive(), "pkg/setup.py": "import setuptools\n"},
        2,
        f"{NOT_OURS}, and plugin folder {{tmp}}/pkg is not (no .discopop-output.json); it holds setup.py",
    ),
]


def test_every_command_with_force_is_covered() -> None:
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids))
    for command in ("sft", "align", "merge", "export", "losses", "judge", "discover", "discover-report"):
        assert any(i.startswith(f"{command}-") and "force" in i for i in ids), command
    check_case_ids(CASES, ("align", "merge", "judge", "discover"), at_least=3)


@pytest.mark.parametrize("bad", CASES)
def test_refused(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)


def test_force_replaces_an_earlier_versions_output_by_its_card_only(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Outputs written before the marker existed are recognised by the card only discopop writes; a file someone
    added to such a folder keeps it from being replaced."""
    from bad_input import runner, snapshot

    from discopop_cli.cli import app

    lora_adapter(tmp_path / "adapter", base=str(tiny_model_dir))
    old = tmp_path / "merged"
    old.mkdir()
    (old / "README.md").write_text("---\ntags:\n- discopop-cli\n- merged-lora\n---\n# merged\n")
    (old / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    (old / "thesis.tex").write_text("mine")
    args = ["merge", str(tmp_path / "adapter"), "-o", str(old), "--force"]
    before = snapshot(tmp_path)
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and f"--force would delete thesis.tex in output {old}" in " ".join(
        refused.output.split()
    )
    assert snapshot(tmp_path) == before

    (old / "thesis.tex").unlink()
    replaced = runner.invoke(app, args)
    assert replaced.exit_code == 0, replaced.output
    marker = json.loads((old / ".discopop-output.json").read_text())
    assert marker["tool"] == "discopop-cli" and marker["command"] == "merge"
    assert (old / "model.safetensors").stat().st_size > len(EMPTY_SAFETENSORS)
