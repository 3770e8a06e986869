"""A new user points the shipped zephyr recipe at a local file: `--unset` and `--set KEY=null` remove keys, and
every error's suggested fix is one the next check accepts. Also what the 2024 form brings (seed 42, the empty
system turn, SFT packing) and the cap on tokenizing processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from bad_input import EMPTY_SAFETENSORS
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.errors import UserError
from discopop_cli.recipes.load import load_recipe

runner = CliRunner()


def dry_run(repo_root: Path, *args: str, command: str = "align") -> tuple[int, str]:
    recipe = "zephyr-7b-gemma.yaml" if command == "align" else "zephyr-7b-gemma-sft.yaml"
    result = runner.invoke(app, [command, str(repo_root / "recipes" / recipe), "--dry-run", *args])
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def suggested(message: str, start: str) -> list[str]:
    """The command-line options an error suggests, from `start` to the closing parenthesis or the end."""
    import shlex

    text = message.split(start, 1)[1]
    text = text.split(")", 1)[0] if text.count("'") % 2 == 0 else text
    return shlex.split(start + text.split(" (or", 1)[0].split(", or", 1)[0])


def test_the_local_file_path_a_new_user_takes(repo_root: Path, tmp_path: Path, monkeypatch, no_network) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text((repo_root / "recipes/data/tiny-preferences.jsonl").read_text())

    # 1. The 2024 dataset_mixer names the file: its test split cannot come from a one-split file.
    code, out = dry_run(repo_root, "--set", "dataset_mixer={mine.jsonl: 1.0}")
    assert code == 2 and "dataset file mine.jsonl has one split, 'train' (asked for 'test')" in out
    fix = suggested(out, "--unset dataset_mixer")
    assert fix[:4] == ["--unset", "dataset_mixer", "--unset", "dataset_splits"]
    code, after = dry_run(repo_root, *fix)
    assert code == 0, after
    assert "mine.jsonl [train] (140 rows)" in after and "test_split_size 0.05 of the training mixture" in after

    # The other fix it names: no eval split, and evaluation off (the command line's eval_strategy wins over the
    # recipe's 2024 evaluation_strategy).
    no_eval = suggested(out, "--set dataset_splits=[train]")
    code, after = dry_run(repo_root, "--set", "dataset_mixer={mine.jsonl: 1.0}", *no_eval)
    assert code == 0, after
    assert "'evaluation_strategy' left out: --set eval_strategy replaces it" in after and "eval off" in after

    # 2. A dataset_mixture beside the recipe's dataset_mixer: the error names the --unset that makes room.
    mixture = ["--set", "dataset_mixture={datasets: [mine.jsonl], test_split_size: 16}"]
    code, out = dry_run(repo_root, *mixture)
    assert code == 2 and "not both" in out
    code, after = dry_run(repo_root, *suggested(out, "--unset dataset_mixer"), *mixture)
    assert code == 0, after

    # 3. Without eval data while the recipe evaluates: each fix the error names passes.
    code, out = dry_run(repo_root, "--set", "dataset_mixer={mine.jsonl: 1.0}", "--set", "dataset_splits=[train]")
    assert code == 2 and "dataset_splits names no test split" in out
    code, after = dry_run(
        repo_root,
        "--set",
        "dataset_mixer={mine.jsonl: 1.0}",
        "--set",
        "dataset_splits=[train]",
        *suggested(out, "--set eval_strategy=no"),
    )
    assert code == 0, after
    assert list(tmp_path.iterdir()) == [tmp_path / "mine.jsonl"]  # dry runs write nothing


def test_set_null_removes_a_data_key_and_unset_any_key(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text((repo_root / "recipes/data/tiny-preferences.jsonl").read_text())
    code, out = dry_run(
        repo_root,
        "--set",
        "dataset_mixer=null",
        "--set",
        "dataset_splits=null",
        "--set",
        "dataset_mixture={datasets: [mine.jsonl], test_split_size: 16}",
    )
    assert code == 0, out
    code, out = dry_run(repo_root, "--unset", "max_prompt_length")
    assert code == 0 and "truncation as TRL 0.8.6" not in out and "max_length 1024" in out
    code, out = dry_run(repo_root, "--unset", "max_prompt_lenght")
    assert code == 2 and "--unset max_prompt_lenght: the recipe has no key" in out and "max_prompt_length" in out


def test_dataset_workers_are_capped_at_the_cores(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cores = len(os.sched_getaffinity(0))
    code, out = dry_run(repo_root, "--set", f"preprocessing_num_workers={cores + 10}")
    assert code == 0
    assert f"dataset_num_proc {cores + 10} capped at the {cores} CPU core(s) here" in out


def write(folder: Path, body: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    return folder


def test_the_2024_form_brings_what_the_2024_scripts_did(tmp_path: Path, model_dir: Path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    legacy = {"model_name_or_path": str(model_dir), "dataset_mixer": {str(data): 1.0}, "dataset_splits": ["train"]}
    recipe = load_recipe(write(tmp_path, legacy), "sft", quiet=True)
    assert recipe.data.seed == 42
    assert recipe.extras["auto_insert_empty_system_msg"] is True
    assert (recipe.training["packing"], recipe.training["packing_strategy"]) == (True, "wrapped")
    # What the recipe says itself stands; today's form gets none of it.
    recipe = load_recipe(write(tmp_path, {**legacy, "packing": False, "auto_insert_empty_system_msg": False}), "sft")
    assert recipe.training["packing"] is False and recipe.extras["auto_insert_empty_system_msg"] is False
    current = {"model_name_or_path": str(model_dir), "dataset_mixture": {"datasets": [str(data)]}}
    recipe = load_recipe(write(tmp_path, current), "sft", quiet=True)
    assert recipe.data.seed == 0 and "packing" not in recipe.training
    assert "auto_insert_empty_system_msg" not in recipe.extras
    with pytest.raises(UserError, match="global_batch_size must be a positive integer, got 0"):
        load_recipe(write(tmp_path, {**current, "global_batch_size": 0}), "sft")
