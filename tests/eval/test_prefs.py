"""`discopop eval prefs`: TRL's numbers on a tiny model, the reference-free accuracies, the table and the saved results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
BETA = 0.3
PAIRS = 22  # not a multiple of the batch size: the last, smaller batch is weighted as TRL weighs it


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with perturbed weights: a policy whose log-probs differ from the reference's."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("policy") / "policy"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines = tiny_dataset_path.read_text(encoding="utf-8").splitlines()[:PAIRS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def trl_evaluate(policy: Path, ref: Path, data: Path, tmp_path: Path) -> dict[str, float]:
    """What a TRL user gets: DPOTrainer.evaluate() with a reference model on the same pairs and beta."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = load_dataset("json", data_files=str(data), split="train")
    config = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=BETA,
        per_device_eval_batch_size=4,
        max_length=128,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        ref_model=AutoModelForCausalLM.from_pretrained(ref),
        args=config,
        train_dataset=rows,
        eval_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    return trainer.evaluate()


def eval_json(*args: str) -> dict:
    result = runner.invoke(app, ["eval", "prefs", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_numbers_equal_dpo_trainer_evaluate(
    policy_dir: Path, tiny_model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    expected = trl_evaluate(policy_dir, tiny_model_dir, pairs_file, tmp_path)
    args = [str(policy_dir), "--ref", str(tiny_model_dir), "--data", str(pairs_file), "--beta", str(BETA)]
    got = eval_json(*args, "--batch-size", "4", "--max-length", "128", "--no-save")["models"][str(policy_dir)]
    for metric in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"]:
        assert got[metric] == pytest.approx(expected[f"eval_{metric}"], abs=1e-5), metric
    for metric in ["logps/chosen", "logps/rejected"]:
        assert got[metric] == pytest.approx(expected[f"eval_{metric}"], abs=1e-5, rel=1e-6), metric
    # The perturbed policy is not the reference: the check compares numbers that are not all zero.
    assert abs(got["rewards/margins"]) > 1e-3
    assert got["pairs"] == PAIRS


EARLIER_CARD = """---
license: apache-2.0
model-index:
- name: policy
  results:
  - task: {type: text-generation}
    dataset: {name: MT-Bench, type: mt_bench}
    metrics:
    - {type: score, value: 7.1, name: MT-Bench score}
---

# policy

Written by hand.
"""


def test_side_by_side_table_and_results_kept_with_the_model(
    policy_dir: Path, tiny_model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    import yaml

    policy = tmp_path / "policy"
    shutil.copytree(policy_dir, policy)
    (policy / "README.md").write_text(EARLIER_CARD, encoding="utf-8")
    ref = tmp_path / "base"
    shutil.copytree(tiny_model_dir, ref)

    # Reference-free first, then against the base: two results, neither replacing the other.
    free = runner.invoke(app, ["eval", "prefs", str(policy), "--data", str(pairs_file)])
    assert free.exit_code == 0, free.output
    table = runner.invoke(app, ["eval", "prefs", str(ref), str(policy), "--ref", str(ref), "--data", str(pairs_file)])
    assert table.exit_code == 0, table.output
    assert "rewards/accuracies" in table.stdout and "(reference)" in table.stdout
    assert "base" in table.stdout and "policy" in table.stdout  # one column per model
    assert "ref_free/accuracies_per_token" in table.stdout

    runs = json.loads((policy / "eval_results.json").read_text(encoding="utf-8"))["results"]
    assert [r["reference"] for r in runs] == [None, str(ref)]
    assert "rewards/accuracies" in runs[1]["metrics"] and "rewards/accuracies" not in runs[0]["metrics"]
    # Running the same evaluation again updates its entry instead of adding a third.
    again = runner.invoke(app, ["eval", "prefs", str(policy), "--data", str(pairs_file), "--json"])
    assert again.exit_code == 0, again.output
    assert len(json.loads((policy / "eval_results.json").read_text(encoding="utf-8"))["results"]) == 2

    text = (policy / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "apache-2.0" and "Written by hand." in text
    results = front["model-index"][0]["results"]
    assert results[0]["metrics"] == [{"type": "score", "value": 7.1, "name": "MT-Bench score"}]  # kept as it was
    names = {m["name"] for m in results[1]["metrics"]}
    assert {"rewards/accuracies vs base", "ref_free/accuracies", "ref_free/accuracies_per_token"} <= names
    value = next(m["value"] for m in results[1]["metrics"] if m["name"] == "rewards/accuracies vs base")
    assert value == pytest.approx(runs[1]["metrics"]["rewards/accuracies"], abs=1e-6)
