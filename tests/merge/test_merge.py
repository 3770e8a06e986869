"""`discopop merge`: the merged model computes what base + adapter compute through peft, and refusals write nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Prompt-like ids of the tiny vocabulary (512), BOS first.
TOKEN_IDS = torch.tensor(
    [[2, 5, 40, 77, 123, 260, 301, 6, 11, 499, 87, 1], [2, 5, 64, 9, 300, 412, 33, 6, 150, 7, 90, 18]]
)


def merge(*args: object):
    return runner.invoke(app, ["merge", *map(str, args)])


def logits_of(model: torch.nn.Module, ids: torch.Tensor = TOKEN_IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def merged_logits(folder: Path, ids: torch.Tensor = TOKEN_IDS) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return logits_of(AutoModelForCausalLM.from_pretrained(folder).eval(), ids)


def peft_logits(base: Path, adapter: Path, ids: torch.Tensor = TOKEN_IDS, vocab: int | None = None) -> torch.Tensor:
    """Base + adapter through peft, unmerged: the reference a merge must reproduce."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if vocab is not None:
        model.resize_token_embeddings(vocab)
    return logits_of(PeftModel.from_pretrained(model, adapter).eval(), ids)


def base_logits(base: Path, ids: torch.Tensor = TOKEN_IDS) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return logits_of(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval(), ids)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def aligned_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset_path: Path) -> Path:
    """A LoRA adapter from `discopop align` with use_peft, trained hard enough to move the logits clearly."""
    folder = tmp_path_factory.mktemp("lora-align")
    recipe = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset_mixture": {"datasets": [{"id": str(tiny_dataset_path)}], "seed": 0},
        "loss_type": "discopop",
        "beta": 0.1,
        "learning_rate": 0.05,
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "max_length": 96,
        "max_prompt_length": 48,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_target_modules": TARGETS,
        "output_dir": str(folder / "adapter"),
    }
    (folder / "lora.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = runner.invoke(app, ["align", str(folder / "lora.yaml")])
    assert result.exit_code == 0, result.output
    return folder / "adapter"


def peft_adapter(base: Path, folder: Path, resize: int | None = None, **lora: object) -> Path:
    """An adapter built with peft directly, every trainable tensor nudged off its init so nothing is a no-op."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if resize:
        model.resize_token_embeddings(resize, mean_resizing=False)
    model = get_peft_model(model, LoraConfig(**lora))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


def test_merged_model_equals_base_plus_adapter(aligned_adapter: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    result = merge(aligned_adapter, "--output", out)
    assert result.exit_code == 0, result.output
    assert f"-> {out}" in result.output and "14 LoRA weights" in result.output

    expected = peft_logits(tiny_model_dir, aligned_adapter)
    got = merged_logits(out)
    assert max_diff(got, expected) <= 1e-4
    # The adapter really moved the model, so a copy of the base could not pass the check above.
    assert max_diff(got, base_logits(tiny_model_dir)) > 0.2

    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float32" and config["tie_word_embeddings"] is True
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == json.loads((tiny_model_dir / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out).chat_template
    assert (out / "tokenizer.model").read_bytes() == (tiny_model_dir / "tokenizer.model").read_bytes()

    card = (out / "README.md").read_text()
    assert f"base_model: {tiny_model_dir}" in card and "library_name: transformers" in card
    assert f"`{aligned_adapter}`" in card
    assert "- r: 8" in card and "- lora_alpha: 16" in card and "- scaling: lora_alpha / r = 2" in card
    assert "q_proj (2)" in card and "down_proj (2)" in card and "14 weights in all" in card
    assert "- dtype: as stored in the base (float32)" in card
    assert "**discopop**" in card  # the adapter's training details come along
    assert not leftovers(tmp_path)


def test_bfloat16_output(aligned_adapter: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    out = tmp_path / "merged-bf16"
    result = merge(aligned_adapter, "--output", out, "--dtype", "bfloat16", "--max-shard-size", "100KB")
    assert result.exit_code == 0, result.output
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and sorted(p.name for p in out.glob("*.safetensors")) == files
    for name in files:
        with safe_open(out / name, framework="pt") as handle:
            assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"BF16"}  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "- dtype: bfloat16" in (out / "README.md").read_text()

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    expected = peft_logits(tiny_model_dir, aligned_adapter)
    got = logits_of(model)
    # Within bf16's resolution of the merged float32 weights, and far closer to them than the base is.
    assert max_diff(got, expected) <= 0.02 * expected.abs().max().item() + 0.02
    assert max_diff(got, expected) < max_diff(base_logits(tiny_model_dir), expected) / 2


def test_existing_output_needs_force(aligned_adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = merge(aligned_adapter, "--output", out)
    assert refused.exit_code == 2
    assert "already exists; pass --force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    # --force replaces only discopop's own output: a folder holding the user's file is not.
    not_ours = merge(aligned_adapter, "--output", out, "--force")
    assert not_ours.exit_code == 2 and "--force replaces only discopop's own output" in not_ours.output
    assert (out / "keep.txt").read_text() == "mine"

    (out / "keep.txt").unlink()
    assert merge(aligned_adapter, "--output", out).exit_code == 0  # an empty folder is no output yet
    first = (out / "model.safetensors").stat().st_mtime_ns
    replaced = merge(aligned_adapter, "--output", out, "--force")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "model.safetensors").stat().st_mtime_ns != first
    assert not leftovers(tmp_path)


@pytest.fixture(scope="module")
def other_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from discopop_cli.demo.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("other-bases")
    return {
        "narrower": build_tiny_model(folder / "narrower", hidden_size=32),
        "shallower": build_tiny_model(folder / "shallower", num_layers=1),
    }


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("narrower", r"LoRA for model\.layers\.0\.\w+\.\w+ maps \d+ -> \d+ features but .* weight is \(\d+, \d+\)"),
        ("shallower", r"targets model\.layers\.1\.\S+\.weight, but .* has no such tensor"),
    ],
)
def test_mismatched_base_is_refused_before_writing(
    aligned_adapter: Path, other_bases: dict[str, Path], tmp_path: Path, base: str, message: str
) -> None:
    out = tmp_path / "merged"
    result = merge(aligned_adapter, "--output", out, "--base", other_bases[base])
    assert result.exit_code == 2
    assert "trained on a different base" in result.output
    assert __import__("re").search(message, result.output.replace("\n", " "))
    assert list(tmp_path.iterdir()) == []  # not even a staging folder


def test_rslora_scaling(tiny_model_dir: Path, tmp_path: Path) -> None:
    """rsLoRA scales by alpha / sqrt(r): 8 / 2 = 4 here, twice plain LoRA's alpha / r."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = peft_adapter(tiny_model_dir, tmp_path / "rs", r=4, lora_alpha=8, use_rslora=True, target_modules=TARGETS)
    out = tmp_path / "merged"
    result = merge(adapter, "--output", out)
    assert result.exit_code == 0, result.output
    assert "scaling: lora_alpha / sqrt(r) (rsLoRA) = 4" in (out / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    got = merged_logits(out)
    assert max_diff(got, logits_of(peft_merged)) <= 1e-4
    assert max_diff(got, peft_logits(tiny_model_dir, adapter)) <= 1e-4
    assert max_diff(got, base_logits(tiny_model_dir)) > 0.1


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2 keeps its projections as Conv1D (fan_in_fan_out) with biases: the other weight layout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("gpt2") / "model"
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=512, n_positions=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


ADAPTER_KINDS = {
    "rank and alpha patterns": {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": TARGETS,
        "rank_pattern": {"o_proj": 2, "layers.1.self_attn.q_proj": 6},
        "alpha_pattern": {"down_proj": 3},
    },
    "DoRA": {"r": 4, "target_modules": TARGETS, "use_dora": True},
    "modules_to_save on the tied embedding": {
        "r": 4,
        "target_modules": ["q_proj"],
        "modules_to_save": ["embed_tokens"],
    },
    "LoRA on the embedding": {"r": 4, "target_modules": ["q_proj", "embed_tokens"]},
    "LoRA on the tied lm_head": {"r": 4, "target_modules": ["v_proj", "lm_head"]},
    "trainable tokens": {"r": 4, "target_modules": ["q_proj"], "trainable_token_indices": [5, 6, 300]},
    "resized vocabulary": {
        "resize": 520,
        "r": 4,
        "target_modules": ["q_proj"],
        "modules_to_save": ["embed_tokens", "lm_head"],
    },
    # What `discopop sft` with use_peft writes when the chat template brings new tokens.
    "trainable new tokens": {
        "resize": 514,
        "r": 4,
        "target_modules": ["q_proj", "v_proj"],
        "trainable_token_indices": {"embed_tokens": [512, 513]},
    },
    "fan_in_fan_out with lora_bias": {
        "r": 4,
        "target_modules": ["c_attn", "c_proj"],
        "fan_in_fan_out": True,
        "lora_bias": True,
    },
}


@pytest.mark.parametrize("kind", list(ADAPTER_KINDS))
def test_adapter_kinds_merge_like_peft(kind: str, tiny_model_dir: Path, tiny_gpt2: Path, tmp_path: Path) -> None:
    base = tiny_gpt2 if "fan_in_fan_out" in kind else tiny_model_dir
    lora = dict(ADAPTER_KINDS[kind])
    resize = lora.pop("resize", None)
    adapter = peft_adapter(base, tmp_path / "adapter", resize=resize, **lora)
    out = tmp_path / "merged"
    result = merge(adapter, "--output", out, "--base", base)
    assert result.exit_code == 0, result.output
    ids = torch.cat([TOKEN_IDS, torch.tensor([[resize - 2, resize - 1]] * 2)], dim=1) if resize else TOKEN_IDS
    expected = peft_logits(base, adapter, ids, vocab=resize)
    got = merged_logits(out, ids)
    assert got.shape == expected.shape
    assert max_diff(got, expected) <= 1e-4
    # Positions and vocabulary the base knows: the adapter must have changed them clearly.
    assert max_diff(got[:, : TOKEN_IDS.shape[1], :512], base_logits(base)[..., :512]) > 0.05
    config = json.loads((out / "config.json").read_text())
    if resize:
        assert config["vocab_size"] == resize
    if kind == "trainable new tokens":
        assert config["tie_word_embeddings"] is True  # peft mirrors the rows into the tied head: still one matrix
    if kind in ("modules_to_save on the tied embedding", "LoRA on the embedding", "LoRA on the tied lm_head"):
        assert config["tie_word_embeddings"] is False  # one side changed: peft's forward no longer shares it


def tamper(adapter: Path, **changes: object) -> Path:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return adapter


def test_refusals_write_nothing(aligned_adapter: Path, tiny_model_dir: Path, tiny_gpt2: Path, tmp_path: Path) -> None:
    def refused(adapter: Path, *args: object, match: str) -> None:
        result = merge(adapter, "--output", tmp_path / "out" / "merged", *args)
        assert result.exit_code == 2, result.output
        assert match in result.output.replace("\n", " "), result.output
        assert not (tmp_path / "out").exists()

    refused(tmp_path / "missing", match="not found")
    refused(tiny_model_dir, match="a full model, not a LoRA adapter")

    quantized = shutil.copytree(tiny_model_dir, tmp_path / "quantized")
    tamper_config = json.loads((quantized / "config.json").read_text())
    tamper_config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(tamper_config))
    refused(aligned_adapter, "--base", quantized, match="is quantized (bitsandbytes)")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copyfile(tiny_model_dir / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    refused(aligned_adapter, "--base", pickled, match="reads safetensors only")

    pissa = tamper(shutil.copytree(aligned_adapter, tmp_path / "pissa"), init_lora_weights="pissa")
    refused(pissa, match="rewrites the base weights")
    dora = peft_adapter(tiny_gpt2, tmp_path / "dora", r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    refused(tamper(dora, use_dora=True), "--base", tiny_gpt2, match="combines DoRA with fan_in_fan_out")

    from transformers import AutoTokenizer

    grown = shutil.copytree(aligned_adapter, tmp_path / "grown")
    tokenizer = AutoTokenizer.from_pretrained(grown)
    tokenizer.add_tokens([f"<new{i}>" for i in range(8)])
    tokenizer.save_pretrained(grown)
    refused(grown, match="the added tokens were never trained")
    refused(aligned_adapter, "--dtype", "int8", match="not one of bfloat16, float16, float32")

    onto_itself = merge(aligned_adapter, "--output", aligned_adapter, "--force")
    assert (
        onto_itself.exit_code == 2
        and "is the adapter itself: an output never replaces or holds an input" in " ".join(onto_itself.output.split())
    )
    assert (aligned_adapter / "adapter_model.safetensors").is_file()


def test_help_stays_light() -> None:
    code = "import sys, discopop_cli.cli; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adapter_generation_config_wins(aligned_adapter: Path, tmp_path: Path) -> None:
    """An adapter trained after `sft` added an end-of-turn token carries the stop tokens the merged model needs."""
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(aligned_adapter, adapter)
    generation = json.loads((adapter / "generation_config.json").read_text())
    generation["eos_token_id"] = [1, 6, 7]
    (adapter / "generation_config.json").write_text(json.dumps(generation))
    out = tmp_path / "merged"
    assert merge(adapter, "--output", out).exit_code == 0
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [1, 6, 7]
