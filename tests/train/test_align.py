"""`discopop align` through TRL on the tiny model: outputs, refusals, and the loss injection against TRL's own."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.outputs import mark
from discopop_cli.train.injection import LossPlan, plan_losses

runner = CliRunner()


def tiny_recipe(folder: Path, model_dir: Path, dataset: Path, **overrides) -> Path:
    body = {
        "model_name_or_path": str(model_dir),
        "dataset_mixture": {"datasets": [{"id": str(dataset)}], "seed": 0, "test_split_size": 8},
        "loss_type": "discopop",
        "beta": 0.1,
        "learning_rate": 1e-3,
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "eval_strategy": "steps",
        "eval_steps": 6,
        "logging_steps": 1,
        "max_length": 96,
        "max_prompt_length": 48,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": str(folder / "aligned"),
        **overrides,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_align_end_to_end(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    recipe = tiny_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    result = runner.invoke(app, ["align", str(recipe)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "aligned"
    assert "no GPU found" in result.output
    assert f"aligned: {out}" in result.output

    # The model, in safetensors only, trained away from its start.
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    changed = max((after[k] - before[k]).abs().max().item() for k in before)
    assert changed > 1e-4

    # The tokenizer keeps its ChatML template.
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tokenizer.chat_template

    # TRL's log history, with its reward metrics and the registry loss's own.
    state = json.loads((out / "trainer_state.json").read_text())
    train_logs = [e for e in state["log_history"] if "loss" in e]
    assert len(train_logs) == 6
    assert all("rewards/margins" in e and "loss/discopop" in e for e in train_logs)
    assert all(math.isfinite(e["loss"]) for e in train_logs)
    assert any("eval_rewards/margins" in e for e in state["log_history"])

    # The resolved recipe and the card.
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["loss_type"] == "discopop" and resolved["max_prompt_length"] == 48
    card = (out / "README.md").read_text()
    assert f"base_model: {tiny_model_dir}" in card
    assert "**discopop**" in card and "exp(-x)" in card and "discopop_tau=0.05" in card
    assert "- learning_rate: 0.001" in card and "- total_train_batch_size: 4" in card
    assert "| Training Loss | Epoch | Step | Validation Loss |" in card
    assert "- TRL 1.16" in card
    assert not (out / ".final.partial").exists() and not list(tmp_path.glob(".aligned.*"))


def test_existing_output_needs_force(tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, tiny_model_dir, tiny_dataset_path, max_steps=1, eval_strategy="no")
    out = tmp_path / "aligned"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = runner.invoke(app, ["align", str(recipe)])
    assert refused.exit_code == 2
    assert "already exists; pass --force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    # --force replaces only discopop's own output: not a folder holding the user's file.
    not_ours = runner.invoke(app, ["align", str(recipe), "--force"])
    assert not_ours.exit_code == 2 and "--force replaces only discopop's own output" in not_ours.output
    assert (out / "keep.txt").read_text() == "mine"

    (out / "keep.txt").unlink()
    mark(out, "align")  # an earlier run of discopop's
    (out / "model.safetensors").write_text("earlier weights")
    replaced = runner.invoke(app, ["align", str(recipe), "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert (out / "model.safetensors").stat().st_size > len("earlier weights")


# --------------------------------------------------------------------------------------------------------------
# The injection, batch by batch.

SEED_CARD_LOSS = """
import torch
import torch.nn.functional as F


def log_ratio_modulated_loss(
    self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
    log_ratio_modulation = torch.sigmoid(logits)
    logistic_component = -F.logsigmoid(self.beta * logits)
    exp_component = torch.exp(-self.beta * logits)
    return logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation
"""


@pytest.fixture(scope="module")
def trainer(tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig

    dataset = load_dataset("json", data_files=str(tiny_dataset_path), split="train").select(range(4))
    config = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trainer")),
        per_device_train_batch_size=1,
        beta=0.05,
        use_cpu=True,
        bf16=False,
        report_to="none",
        activation_checkpointing=False,
    )
    plan = plan_losses("discopop", None, {"discopop_tau": 0.05}, None)
    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer as cls

    trainer = cls(
        model=str(tiny_model_dir),
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        loss_plan=plan,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    return trainer, batch


def loss_with(trainer, batch, plan: LossPlan, ref_chosen: float) -> float:
    """The trainer's loss on one pair with the given plan and a chosen reference log-prob that moves x."""
    trainer.loss_plan = plan
    trainer.loss_types, trainer.loss_weights = plan.for_trl()
    inputs = {**batch, "ref_chosen_logps": torch.tensor([ref_chosen]), "ref_rejected_logps": torch.tensor([0.0])}
    trainer.precompute_ref_logps = True
    try:
        with torch.no_grad():
            return trainer._compute_loss(trainer.model, inputs, False).item()
    finally:
        trainer.precompute_ref_logps = False


OFFSETS = [-4000.0, -2500.0, -1800.0, -600.0, -100.0, -20.0, 0.0, 20.0, 100.0, 600.0, 1800.0, 4000.0]


def test_registry_discopop_equals_trl_builtin_where_finite(trainer) -> None:
    trainer, batch = trainer
    ours_plan = plan_losses("discopop", None, {"discopop_tau": 0.05}, None)
    trl_plan = LossPlan(["discopop"], [1.0], [])
    compared = 0
    for offset in OFFSETS:
        ours = loss_with(trainer, batch, ours_plan, offset)
        theirs = loss_with(trainer, batch, trl_plan, offset)
        assert math.isfinite(ours), f"registry discopop not finite at ref offset {offset}"
        if math.isfinite(theirs):
            assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)
            compared += 1
    assert compared >= 6
    # The sweep must reach where TRL's literal form overflows, or it proves nothing about stability.
    assert not math.isfinite(loss_with(trainer, batch, trl_plan, 4000.0))


def test_paper_form_user_loss_runs_in_the_trainer(trainer, tmp_path: Path, monkeypatch) -> None:
    trainer, batch = trainer
    (tmp_path / "seed_card_loss.py").write_text(textwrap.dedent(SEED_CARD_LOSS))
    monkeypatch.syspath_prepend(str(tmp_path))
    user_plan = plan_losses("seed_card_loss:log_ratio_modulated_loss", None, {}, None)
    assert user_plan.registry[0].name == "seed_card_loss:log_ratio_modulated_loss"
    ours_plan = plan_losses("discopop", None, {"discopop_tau": 0.05}, None)
    # With beta = tau = 0.05 the seed card's form is the registry's discopop (the model card's claim).
    for offset in [-20.0, 0.0, 20.0, 100.0]:
        assert loss_with(trainer, batch, user_plan, offset) == pytest.approx(
            loss_with(trainer, batch, ours_plan, offset), rel=1e-5
        )


def test_loss_list_combines_like_trl(trainer) -> None:
    trainer, batch = trainer
    combined = plan_losses(["discopop", "sft"], [1.0, 0.5], {"discopop_tau": 0.05}, None)
    assert combined.trl_types == ["sft"] and [p.name for p in combined.registry] == ["discopop"]
    discopop_only = plan_losses("discopop", None, {"discopop_tau": 0.05}, None)
    sft_only = LossPlan(["sft"], [0.5], [])
    total = loss_with(trainer, batch, combined, 10.0)
    parts = loss_with(trainer, batch, discopop_only, 10.0) + loss_with(trainer, batch, sft_only, 10.0)
    assert total == pytest.approx(parts, rel=1e-6)


def test_demo_recipe_learns_the_preferences(repo_root: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The demo's recipe, as shipped: DiscoPOP must separate chosen from rejected on held-out pairs."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["align", str(repo_root / "recipes/tiny-align.yaml"), "--set", f"model_name_or_path={tiny_model_dir}"],
    )
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "outputs/tiny-align/trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_rewards/accuracies" in e]
    assert len(evals) == 3  # one per epoch
    assert evals[-1]["eval_rewards/accuracies"] >= 0.75
    assert evals[-1]["eval_rewards/margins"] > evals[0]["eval_rewards/margins"] > 0


def test_lora_align_uses_the_disabled_adapter_as_reference(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path
) -> None:
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        tiny_dataset_path,
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=2,
        eval_strategy="no",
        hub_token="hf_secret_value",
    )
    result = runner.invoke(app, ["align", str(recipe)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "aligned"
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    first = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    # LoRA starts as the identity, so on the first step policy and reference agree exactly.
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0
    assert "library_name: peft" in (out / "README.md").read_text()
    # Secrets from the recipe never reach the written recipe.
    assert "hf_secret_value" not in (out / "recipe.yaml").read_text()


def test_unsupported_trl_is_refused_with_the_range(monkeypatch) -> None:
    import trl

    from discopop_cli.core.errors import UserError
    from discopop_cli.train.injection import check_trl

    monkeypatch.setattr(trl, "__version__", "1.15.2")
    with pytest.raises(UserError, match=r"TRL 1.15.2 is installed .* supports trl>=1.16,<1.17"):
        check_trl()
