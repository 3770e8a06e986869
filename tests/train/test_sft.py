"""`discopop sft` through TRL's SFTTrainer on the tiny model: learning, template tokens, LoRA, recipes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.demo.tiny import CHATML_TEMPLATE
from discopop_cli.train.chat_tokens import fit_template_tokens, template_tokens

runner = CliRunner()

# A template whose turn tokens the tiny model's vocabulary lacks (it knows the ChatML ones).
TURN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|turn_start|>' + message['role'] + '\\n' + message['content'] + '<|turn_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn_start|>assistant\\n' }}{% endif %}"
)
TURN_TOKENS = ["<|turn_start|>", "<|turn_end|>"]


@pytest.fixture(scope="module")
def chat_path(repo_root: Path) -> Path:
    path = repo_root / "recipes" / "data" / "tiny-chat.jsonl"
    assert path.is_file(), f"missing shipped dataset {path}"
    return path


def sft_recipe(folder: Path, model_dir: Path, dataset: Path, **overrides) -> Path:
    body = {
        "model_name_or_path": str(model_dir),
        "chat_template": TURN_TEMPLATE,
        "dataset_mixture": {"datasets": [{"id": str(dataset), "weight": 0.25}], "seed": 0},
        "learning_rate": 5e-3,
        "lr_scheduler_type": "constant",
        "max_steps": 20,
        "per_device_train_batch_size": 8,
        "activation_checkpointing": False,
        "max_length": 64,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": str(folder / "sft"),
        **overrides,
    }
    body = {key: value for key, value in body.items() if value is not None}  # None: leave the key out
    path = folder / "sft.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_sft_learns_and_brings_the_template_tokens(tmp_path: Path, tiny_model_dir: Path, chat_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    before = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert all(len(before.encode(t, add_special_tokens=False)) > 1 for t in TURN_TOKENS)

    result = runner.invoke(app, ["sft", str(sft_recipe(tmp_path, tiny_model_dir, chat_path))])
    assert result.exit_code == 0, result.output
    out = tmp_path / "sft"
    assert "chat template: added <|turn_start|> (id 512), <|turn_end|> (id 513) as special tokens" in result.output
    assert "embeddings resized 512 -> 514 rows" in result.output
    assert f"fine-tuned: {out}" in result.output

    # The loss falls clearly.
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 20
    assert losses[-1] < 0.7 * losses[0], losses

    # Each template token is one token, the embeddings cover the vocabulary, generation stops at the turn's end.
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TURN_TOKENS]
    assert ids == [[512], [513]]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 514
    assert 513 in GenerationConfig.from_pretrained(out).eos_token_id
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], return_dict=True
    )["input_ids"]
    assert rendered[:2] == [tokenizer.bos_token_id, 512] and rendered.count(513) == 2

    # The template is saved; outputs as align: card, resolved recipe, no pickles.
    assert tokenizer.chat_template == TURN_TEMPLATE
    card = (out / "README.md").read_text()
    assert "- sft" in card and "supervised fine-tuning" in card
    assert "added <|turn_start|> (id 512), <|turn_end|> (id 513)" in card
    assert "| Training Loss | Epoch | Step | Mean Token Accuracy |" in card
    assert "- beta:" not in card and "## Loss" not in card  # preference-optimisation rows are align's
    assert yaml.safe_load((out / "recipe.yaml").read_text())["chat_template"] == TURN_TEMPLATE
    names = [p.name for p in out.iterdir()]
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert ".final.partial" not in names and not list(tmp_path.glob(".sft.*"))


def test_new_rows_start_at_the_mean_embedding(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    untouched = fit_template_tokens(model, tokenizer)  # the tiny model knows its ChatML tokens
    assert untouched.summary() is None and len(tokenizer) == 512

    mean = model.get_input_embeddings().weight.detach().mean(dim=0).clone()
    tokenizer.chat_template = TURN_TEMPLATE
    fit = fit_template_tokens(model, tokenizer)
    weight = model.get_input_embeddings().weight.detach()
    assert fit.added == {"<|turn_start|>": 512, "<|turn_end|>": 513}
    assert torch.allclose(weight[512], mean, atol=1e-6) and torch.allclose(weight[513], mean, atol=1e-6)
    assert model.generation_config.eos_token_id[0] == 513
    assert fit_template_tokens(model, tokenizer).summary() is None  # a second pass adds nothing


def test_template_tokens_are_the_literals_it_writes() -> None:
    assert template_tokens(CHATML_TEMPLATE) == ["<|im_start|>", "<|im_end|>"]
    gemma = (
        "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{% generation %}{{ m['content'] }}"
        "{% endgeneration %}<end_of_turn>\n{% endfor %}{# <|not_emitted|> #}<b>{{ '<|eot_id|>' }}"
    )
    assert template_tokens(gemma) == ["<start_of_turn>", "<end_of_turn>", "<|eot_id|>"]


def test_handbook_template_adds_bos_and_eos_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The zephyr template writes <bos> and <eos> itself; TRL must not add another of either."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHATML_TEMPLATE
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}] * 2
    config = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", activation_checkpointing=False
    )
    trainer = SFTTrainer(
        model=str(tiny_model_dir), args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    ids = trainer.train_dataset[0]["input_ids"]
    assert ids[:2] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("<|im_start|>")]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids.count(tokenizer.eos_token_id) == 1
    assert ids[-1] == tokenizer.eos_token_id


def test_lora_sft_writes_an_adapter_that_loads_with_peft(tmp_path: Path, tiny_model_dir: Path, chat_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The template comes with another tokenizer this time: tokenizer_name_or_path, no chat_template in the recipe.
    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.chat_template = TURN_TEMPLATE
    other.save_pretrained(tmp_path / "other-tokenizer")
    recipe = sft_recipe(
        tmp_path,
        tiny_model_dir,
        chat_path,
        chat_template=None,
        tokenizer_name_or_path=str(tmp_path / "other-tokenizer"),
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=3,
    )
    result = runner.invoke(app, ["sft", str(recipe)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "sft"
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert "added <|turn_start|> (id 512), <|turn_end|> (id 513)" in result.output
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "resize_token_embeddings(514)" in card

    # As the card says: the base model, resized to the tokenizer, then the adapter.
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, out)
    assert model.peft_config["default"].r == 8
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == 514 and torch.isfinite(logits).all()


def test_prompt_completion_mixture_with_packing_trains(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    parts = []
    for index, (question, answer) in enumerate([("What is 2 plus 2?", "4."), ("Name a colour.", "Blue.")]):
        path = tmp_path / f"part{index}.jsonl"
        rows = [
            {
                "prompt": [{"role": "user", "content": f"{question} ({i})"}],
                "completion": [{"role": "assistant", "content": answer}],
            }
            for i in range(8)
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        parts.append({"id": str(path)})
    (tmp_path / "chatml.jinja").write_text(CHATML_TEMPLATE, encoding="utf-8")
    recipe = sft_recipe(
        tmp_path,
        tiny_model_dir,
        tmp_path / "unused.jsonl",
        chat_template=None,
        chat_template_path="chatml.jinja",  # TRL's key, a file beside the recipe
        dataset_mixture={"datasets": parts, "seed": 0},
        packing=True,
        max_steps=2,
    )
    dry = runner.invoke(app, ["sft", str(recipe), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "(8 rows)" in dry.output and "bfd into blocks of max_length" in dry.output
    result = runner.invoke(app, ["sft", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "chat template:" not in result.output  # ChatML: nothing to add
    assert "- packing: bfd" in (tmp_path / "sft" / "README.md").read_text()
    assert AutoTokenizer.from_pretrained(tmp_path / "sft").chat_template == CHATML_TEMPLATE


def test_dry_run_zephyr_sft_recipe_offline(repo_root: Path, tmp_path: Path, monkeypatch, no_network) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sft", str(repo_root / "recipes/zephyr-7b-gemma-sft.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "google/gemma-7b" in out
    assert "deita-10k-v0-sft [train_sft]" in out and "deita-10k-v0-sft [test_sft]" in out
    assert "turn tokens <|im_start|>, <|im_end|>" in out
    assert "global batch 128 = 4 per device x 1 process(es) x 32 accumulation" in out  # the published 128
    assert "'packing' not set" not in out  # the recipe packs as run_sft.py did, in so many words
    assert "lr 2e-05, cosine, warmup 0.1, 3 epoch(s)" in out
    assert "max_length 2048" in out
    # The 2024 keys are translated, each with its line.
    for key in ("max_seq_length", "dataset_kwargs", "evaluation_strategy", "warmup_ratio", "dataset_mixer"):
        assert f"'{key}'" in out
    assert "add_special_tokens removed" in out
    assert list(tmp_path.iterdir()) == []  # nothing written

    recipe = yaml.safe_load((repo_root / "recipes/zephyr-7b-gemma-sft.yaml").read_text())
    # The handbook's template as its YAML writes it: "\n" in double quotes is a newline inside Jinja's strings.
    assert recipe["chat_template"] == CHATML_TEMPLATE.replace("\\n", "\n")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["packign=true"], "unknown key 'packign'; did you mean 'packing'"),
        (["dataset_kwargs={add_special_token: false}"], "did you mean 'add_special_tokens'"),
        (["chat_template='{% for m in messages %}'"], "chat_template is not valid Jinja"),
        (["dataset_mixture.datasets=[]"], "'dataset_mixture' needs a non-empty 'datasets' list"),
    ],
)
def test_bad_recipes_are_one_line_errors(
    tmp_path: Path, tiny_model_dir: Path, chat_path: Path, overrides: list[str], message: str
) -> None:
    recipe = sft_recipe(tmp_path, tiny_model_dir, chat_path)
    result = runner.invoke(app, ["sft", str(recipe), "--dry-run", *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_data_the_loss_cannot_use_is_refused(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset_path: Path, chat_path: Path
) -> None:
    preferences = sft_recipe(tmp_path, tiny_model_dir, tiny_dataset_path)
    result = runner.invoke(app, ["sft", str(preferences)])
    assert result.exit_code == 2
    assert "sft needs a 'messages' column" in result.output and "['chosen', 'rejected']" in result.output

    completion_only = sft_recipe(tmp_path, tiny_model_dir, chat_path, completion_only_loss=True)
    result = runner.invoke(app, ["sft", str(completion_only)])
    assert result.exit_code == 2
    assert "completion_only_loss: true needs prompt/completion data" in result.output

    assistant_only = sft_recipe(tmp_path, tiny_model_dir, chat_path, assistant_only_loss=True)
    result = runner.invoke(app, ["sft", str(assistant_only)])
    assert result.exit_code == 2
    assert "{% generation %}" in result.output

    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain.chat_template = None
    plain.save_pretrained(tmp_path / "no-template")
    no_template = sft_recipe(
        tmp_path, tiny_model_dir, chat_path, chat_template=None, tokenizer_name_or_path=str(tmp_path / "no-template")
    )
    result = runner.invoke(app, ["sft", str(no_template)])
    assert result.exit_code == 2
    assert "is conversational ('messages') but the tokenizer has no chat template" in result.output
    assert not (tmp_path / "sft").exists()


def test_rpo_alpha_is_refused_in_an_sft_recipe(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\ndataset_name: a/b\nrpo_alpha: 0.5\n")
    result = runner.invoke(app, ["sft", str(recipe), "--dry-run"])
    assert result.exit_code == 2
    assert "'rpo_alpha' weighs an SFT term inside DPO" in result.output
