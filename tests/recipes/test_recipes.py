"""Recipes and data: both dataset formats, local file types, legacy keys, unknown keys, --set, --dry-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bad_input import EMPTY_SAFETENSORS
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.errors import UserError
from discopop_cli.data.sources import load_datasets
from discopop_cli.recipes.load import load_recipe

runner = CliRunner()

PAIRS = [
    {
        "chosen": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"good {i}"}],
        "rejected": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"bad {i}"}],
    }
    for i in range(20)
]


def write_recipe(folder: Path, body: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """load_recipe checks a local model folder's files (config, safetensors weights), never loads them."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    return folder


def write_files(folder: Path) -> dict[str, Path]:
    """The same 20 pairs as .jsonl, .json, .parquet and .csv (csv with flat text columns)."""
    import pandas as pd

    paths = {}
    jsonl = folder / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n", encoding="utf-8")
    paths["jsonl"] = jsonl
    paths["json"] = folder / "pairs.json"
    paths["json"].write_text(json.dumps(PAIRS), encoding="utf-8")
    paths["parquet"] = folder / "pairs.parquet"
    pd.DataFrame(PAIRS).to_parquet(paths["parquet"])
    paths["csv"] = folder / "pairs.csv"
    pd.DataFrame([{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)]).to_csv(
        paths["csv"], index=False
    )
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "csv"])
def test_local_file_types_load_without_network(tmp_path: Path, model_dir: Path, kind: str) -> None:
    files = write_files(tmp_path)
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixture": {"datasets": [{"id": str(files[kind])}], "seed": 3, "test_split_size": 4},
        },
    )
    recipe = load_recipe(recipe_path, "align")
    train, evaluation = load_datasets(recipe.data, with_eval=True)
    assert (len(train), len(evaluation)) == (16, 4)
    assert {"chosen", "rejected"} <= set(train.column_names)


def test_mixture_weights_subsample_and_mix(tmp_path: Path, model_dir: Path) -> None:
    files = write_files(tmp_path)
    second = tmp_path / "second.jsonl"
    second.write_text("\n".join(json.dumps(p) for p in PAIRS[:10]) + "\n", encoding="utf-8")
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixture": {
                "datasets": [
                    {"id": str(files["jsonl"]), "weight": 0.5, "columns": ["chosen", "rejected"]},
                    {"id": str(second), "weight": 1.0, "columns": ["chosen", "rejected"]},
                ],
                "seed": 0,
            },
        },
    )
    train, evaluation = load_datasets(load_recipe(recipe_path, "align").data, with_eval=False)
    assert len(train) == 10 + 10
    assert evaluation is None


def test_legacy_dataset_mixer_and_keys_are_translated(tmp_path: Path, model_dir: Path, capsys) -> None:
    # A local directory with train/test files stands in for a Hub dataset with train/test splits.
    folder = tmp_path / "prefs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(json.dumps(p) for p in PAIRS[:5]) + "\n", encoding="utf-8")
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixer": {str(folder): 0.5},
            "dataset_splits": ["train", "test"],
            "evaluation_strategy": "steps",
            "torch_dtype": "bfloat16",
            "max_seq_length": 256,
            "preprocessing_num_workers": 2,
            "warmup_ratio": 0.1,
            "use_flash_attention_2": True,
            "max_prompt_length": 128,
        },
    )
    recipe = load_recipe(recipe_path, "align")
    assert recipe.training["eval_strategy"] == "steps"
    assert recipe.model["dtype"] == "bfloat16"
    assert recipe.model["attn_implementation"] == "flash_attention_2"
    assert recipe.training["max_length"] == 256
    assert recipe.training["dataset_num_proc"] == 2
    assert recipe.training["warmup_steps"] == 0.1
    assert recipe.extras["max_prompt_length"] == 128
    notices = capsys.readouterr().err
    for key in ("evaluation_strategy", "torch_dtype", "max_seq_length", "warmup_ratio", "dataset_mixer"):
        assert f"'{key}'" in notices
    train, evaluation = load_datasets(recipe.data, with_eval=True)
    # The 2024 form subsamples training splits only.
    assert (len(train), len(evaluation)) == (10, 5)


def test_rpo_alpha_becomes_weighted_sft_loss(tmp_path: Path, model_dir: Path) -> None:
    files = write_files(tmp_path)
    recipe_path = write_recipe(
        tmp_path,
        {"model_name_or_path": str(model_dir), "dataset_name": str(files["jsonl"]), "rpo_alpha": 0.5},
    )
    recipe = load_recipe(recipe_path, "align")
    assert recipe.training["loss_type"] == ["sigmoid", "sft"]
    assert recipe.training["loss_weights"] == [1.0, 0.5]


def test_unknown_key_is_refused_with_suggestion(tmp_path: Path, model_dir: Path) -> None:
    recipe_path = write_recipe(
        tmp_path, {"model_name_or_path": str(model_dir), "dataset_name": "x/y", "learning_rat": 1e-5}
    )
    result = runner.invoke(app, ["align", str(recipe_path), "--dry-run"])
    assert result.exit_code != 0
    with pytest.raises(UserError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        load_recipe(recipe_path, "align")


def test_unknown_dataset_entry_key_is_refused(tmp_path: Path, model_dir: Path) -> None:
    recipe_path = write_recipe(
        tmp_path,
        {"model_name_or_path": str(model_dir), "dataset_mixture": {"datasets": [{"id": "a/b", "wieght": 0.5}]}},
    )
    with pytest.raises(UserError, match="did you mean 'weight'"):
        load_recipe(recipe_path, "align")


def test_set_overrides_are_yaml_typed_and_nested(tmp_path: Path, model_dir: Path) -> None:
    recipe_path = write_recipe(
        tmp_path,
        {"model_name_or_path": str(model_dir), "dataset_mixture": {"datasets": [{"id": "a/b"}], "seed": 1}},
    )
    recipe = load_recipe(
        recipe_path,
        "align",
        overrides=["learning_rate=5e-7", "loss_type=[discopop, sft]", "dataset_mixture.seed=7", "beta=0.05"],
    )
    assert recipe.training["learning_rate"] == 5e-7
    assert recipe.training["loss_type"] == ["discopop", "sft"]
    assert recipe.training["beta"] == 0.05
    assert recipe.data.seed == 7
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        load_recipe(recipe_path, "align", overrides=["learning_rate"])


def test_eval_strategy_without_eval_data_is_refused(tmp_path: Path, model_dir: Path) -> None:
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixture": {"datasets": [{"id": "a/b"}]},
            "eval_strategy": "steps",
        },
    )
    with pytest.raises(UserError, match="no eval data"):
        load_recipe(recipe_path, "align")


def test_missing_local_model_is_named(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path, {"model_name_or_path": "./nowhere", "dataset_name": "a/b"})
    result = runner.invoke(app, ["align", str(recipe_path), "--dry-run"])
    assert result.exit_code == 2
    assert "model_name_or_path './nowhere' is not a directory" in result.output
    assert "Traceback" not in result.output


def test_bad_yaml_and_missing_recipe_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: [unclosed\n", encoding="utf-8")
    for path, message in [(bad, "invalid YAML at line"), (tmp_path / "none.yaml", "not found")]:
        result = runner.invoke(app, ["align", str(path), "--dry-run"])
        assert result.exit_code == 2
        assert message in result.output


def test_dry_run_zephyr_recipe_offline(repo_root: Path, tmp_path: Path, monkeypatch, no_network) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["align", str(repo_root / "recipes/zephyr-7b-gemma.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1" in out
    assert "argilla/dpo-mix-7k [train]" in out and "argilla/dpo-mix-7k [test]" in out
    assert "discopop" in out and "discopop_tau=0.05" in out
    # The recipe states the published global batch: on one process the accumulation is derived (2 x 64).
    assert "global batch 128 = 2 per device x 1 process(es) x 64 accumulation" in out
    assert "max_prompt_length 512" in out
    assert "lr 5e-07, cosine" in out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_dry_run_counts_local_rows_and_writes_nothing(tmp_path: Path, model_dir: Path) -> None:
    files = write_files(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixture": {"datasets": [{"id": str(files["jsonl"])}, {"id": str(files["parquet"])}]},
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "output_dir": str(tmp_path / "out"),
        },
    )
    result = runner.invoke(app, ["align", str(recipe_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("(20 rows") == 2
    assert "4 per device x 2 accumulation x 1 process(es) = 8 global" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "recipe.yaml"])


def test_saved_to_disk_directory_splits(tmp_path: Path, model_dir: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(PAIRS), "test": Dataset.from_list(PAIRS[:3])}).save_to_disk(
        str(tmp_path / "saved")
    )
    recipe_path = write_recipe(
        tmp_path,
        {
            "model_name_or_path": str(model_dir),
            "dataset_mixture": {
                "datasets": [{"id": "saved", "split": "train"}],
                "eval_datasets": [{"id": "saved", "split": "test"}],
            },
            "eval_strategy": "epoch",
        },
    )
    train, evaluation = load_datasets(load_recipe(recipe_path, "align").data, with_eval=True)
    assert (len(train), len(evaluation)) == (20, 3)
    bad = write_recipe(
        tmp_path,
        {"model_name_or_path": str(model_dir), "dataset_mixture": {"datasets": [{"id": "saved", "split": "dev"}]}},
    )
    with pytest.raises(UserError, match="has no split 'dev'; it has \\['test', 'train'\\]"):
        load_datasets(load_recipe(bad, "align").data, with_eval=False)
