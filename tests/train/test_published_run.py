"""The shipped zephyr recipes resolve to the published DiscoPOP-zephyr-7b-gemma run, on 1, 2 and 8 processes.

Every setting that changes the result is compared with a table of the published values, each naming the file and
key it comes from. The sources (read with git, not copied): SakanaAI/DiscoPOP at 3307865 ("Sakana"), the
alignment-handbook at 8497cae, its last commit of March 2024 ("handbook"), and TRL v0.8.6, the TRL of the run.
Sakana's zephyr-7b-gemma dpo/ and sft/ recipes are byte-identical to the handbook's at that commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.recipes.load import load_recipe
from discopop_cli.train.injection import plan_losses
from discopop_cli.train.launch import LaunchOptions, launch_kind, resolve_processes
from discopop_cli.train.run_plan import plan_run

runner = CliRunner()
HERE = Path(__file__).parent

DPO = "Sakana recipes/zephyr-7b-gemma/dpo/config_full.yaml"
SFT = "Sakana recipes/zephyr-7b-gemma/sft/config_full.yaml"
ZERO3 = "Sakana recipes/accelerate_configs/deepspeed_zero3.yaml"
ADAMW = "transformers 4.39 TrainingArguments defaults (the recipes leave them unset)"

# setting -> (published value, where it comes from)
ALIGN_PUBLISHED: dict[str, tuple[object, str]] = {
    "model": ("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", f"{DPO}: model_name_or_path"),
    "data": (["argilla/dpo-mix-7k [train]", "argilla/dpo-mix-7k [test]"], f"{DPO}: dataset_mixer, dataset_splits"),
    "global_batch": (
        128,
        f"{DPO}: per_device_train_batch_size 2 x gradient_accumulation_steps 8; {ZERO3}: num_processes 8",
    ),
    "learning_rate": (5e-7, f"{DPO}: learning_rate"),
    "schedule": ("cosine", f"{DPO}: lr_scheduler_type"),
    "warmup_ratio": (0.1, f"{DPO}: warmup_ratio"),
    "epochs": (2, f"{DPO}: num_train_epochs"),
    "beta": (0.05, f"{DPO}: beta"),
    "loss": (
        "discopop",
        "Sakana src/alignment/gpo.py: loss_type 'lrml' -> log_ratio_modulated_loss (the paper's DiscoPOP)",
    ),
    "tau": (0.05, "Sakana src/alignment/gpo.py: log_ratio_modulated_loss, tau = 0.05"),
    "max_length": (1024, f"{DPO}: max_length"),
    "max_prompt_length": (512, f"{DPO}: max_prompt_length"),
    "truncation": (
        "TRL 0.8.6 keep_end",
        "TRL v0.8.6 trl/trainer/dpo_trainer.py: truncation_mode='keep_end', tokenize_row",
    ),
    "compute": ("bfloat16", f"{DPO}: bf16; {ZERO3}: mixed_precision bf16"),
    "master_weights": ("float32", f"{ZERO3}: distributed_type DEEPSPEED, zero_stage 3 (float32 optimizer partitions)"),
    "seed": (42, f"{DPO}: seed"),
    "shuffle_seed": (42, "handbook src/alignment/data.py: mix_datasets, shuffle(seed=42)"),
    "system_turn": (True, "handbook src/alignment/configs.py: DataArguments.auto_insert_empty_system_msg default True"),
    "decontaminate_humaneval": (True, "Sakana scripts/run_gpo.py: raw_datasets.filter(decontaminate_humaneval)"),
    "optimizer": ("adamw_torch", f"{DPO}: optim"),
    "adam": ((0.9, 0.999, 1e-8), ADAMW),
    "weight_decay": (0.0, ADAMW),
    "max_grad_norm": (1.0, ADAMW),
}

SFT_PUBLISHED: dict[str, tuple[object, str]] = {
    "model": ("google/gemma-7b", f"{SFT}: model_name_or_path"),
    "tokenizer": ("philschmid/gemma-tokenizer-chatml", f"{SFT}: tokenizer_name_or_path"),
    "data": (
        ["HuggingFaceH4/deita-10k-v0-sft [train_sft]", "HuggingFaceH4/deita-10k-v0-sft [test_sft]"],
        f"{SFT}: dataset_mixer, dataset_splits",
    ),
    "global_batch": (
        128,
        f"{SFT}: per_device_train_batch_size 4 x gradient_accumulation_steps 4; {ZERO3}: num_processes 8",
    ),
    "learning_rate": (2e-5, f"{SFT}: learning_rate"),
    "schedule": ("cosine", f"{SFT}: lr_scheduler_type"),
    "warmup_ratio": (0.1, f"{SFT}: warmup_ratio"),
    "epochs": (3, f"{SFT}: num_train_epochs"),
    "max_length": (2048, f"{SFT}: max_seq_length"),
    "packing": ("wrapped", "handbook scripts/run_sft.py: SFTTrainer(packing=True) (TRL 0.8.6 ConstantLengthDataset)"),
    "compute": ("bfloat16", f"{SFT}: bf16; {ZERO3}: mixed_precision bf16"),
    "master_weights": ("float32", f"{ZERO3}: distributed_type DEEPSPEED, zero_stage 3 (float32 optimizer partitions)"),
    "seed": (42, f"{SFT}: seed"),
    "shuffle_seed": (42, "handbook src/alignment/data.py: mix_datasets, shuffle(seed=42)"),
    "system_turn": (True, "handbook src/alignment/configs.py: DataArguments.auto_insert_empty_system_msg default True"),
    "decontaminate_humaneval": (True, "handbook scripts/run_sft.py: raw_datasets.filter(decontaminate_humaneval)"),
    "optimizer": ("adamw_torch", "handbook src/alignment/configs.py: SFTConfig.optim default 'adamw_torch'"),
    "adam": ((0.9, 0.999, 1e-8), ADAMW),
    "weight_decay": (0.0, ADAMW),
    "max_grad_norm": (1.0, ADAMW),
}

# 1 process alone, 2 under DDP, 8 under ZeRO-3: (accelerate config, processes)
LAUNCHES = [(None, 1), ("ddp", 2), ("zero3", 8)]


def resolve(recipe_path: Path, task: str, accelerate_config: str | None, processes: int) -> dict[str, object]:
    """What the command resolves the recipe to for that launch, on a GPU machine (the precision plan is asked for
    an accelerator; the trainer config is built for the CPU only because this machine has no GPU)."""
    options = LaunchOptions(accelerate_config, processes)
    options.validate(dry_run=True)
    recipe = load_recipe(recipe_path, task, quiet=True)
    total = resolve_processes(recipe, options)
    run = plan_run(recipe, launch_kind(options), total, accelerator=True)
    recipe.training["use_cpu"] = True
    config = recipe.training_config()
    settings: dict[str, object] = {
        "model": recipe.model["model_name_or_path"],
        "data": [spec.label for spec in [*recipe.data.train, *recipe.data.eval]],
        "global_batch": config.per_device_train_batch_size * config.gradient_accumulation_steps * total,
        "learning_rate": config.learning_rate,
        "schedule": str(config.lr_scheduler_type.value),
        "warmup_ratio": config.warmup_steps,  # transformers 5: a value below 1 is the ratio
        "epochs": config.num_train_epochs,
        "max_length": config.max_length,
        "compute": "bfloat16" if run.precision.compute == "bfloat16 autocast" else run.precision.compute,
        "master_weights": run.precision.master,
        "seed": config.seed,
        "shuffle_seed": recipe.data.seed,
        "system_turn": recipe.extras.get("auto_insert_empty_system_msg"),
        "decontaminate_humaneval": recipe.extras.get("decontaminate_humaneval"),
        "optimizer": str(config.optim.value),
        "adam": (config.adam_beta1, config.adam_beta2, config.adam_epsilon),
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
    }
    if task == "align":
        from discopop_cli import losses

        plan = plan_losses(config.loss_type, None, recipe.training, recipe.extras.get("loss_kwargs"))
        (loss,) = plan.registry
        settings["beta"] = config.beta
        settings["loss"] = losses.get_spec(loss.name).name
        settings["tau"] = loss.params["discopop_tau"]
        settings["max_prompt_length"] = recipe.extras.get("max_prompt_length")
        settings["truncation"] = "TRL 0.8.6 keep_end" if recipe.extras.get("max_prompt_length") else "TRL 1.16"
    else:
        settings["tokenizer"] = recipe.extras.get("tokenizer_name_or_path")
        settings["packing"] = config.packing_strategy if config.packing else None
    return settings


@pytest.mark.parametrize(("accelerate_config", "processes"), LAUNCHES)
@pytest.mark.parametrize(
    ("recipe", "task", "published"),
    [("zephyr-7b-gemma.yaml", "align", ALIGN_PUBLISHED), ("zephyr-7b-gemma-sft.yaml", "sft", SFT_PUBLISHED)],
)
def test_zephyr_recipes_resolve_to_the_published_run(
    repo_root: Path, recipe: str, task: str, published: dict, accelerate_config: str | None, processes: int
) -> None:
    observed = resolve(repo_root / "recipes" / recipe, task, accelerate_config, processes)
    assert set(observed) == set(published)
    different = {
        key: f"{observed[key]!r} here, {value!r} published ({source})"
        for key, (value, source) in published.items()
        if observed[key] != value
    }
    assert different == {}


def test_alias_lrml_is_the_recipes_discopop() -> None:
    from discopop_cli import losses

    assert losses.get_spec("lrml") is losses.get_spec("discopop")


# --- the published recipe files, as they are -----------------------------------------------------------------


def test_sakanas_gpo_recipe_dry_runs_as_it_is(tmp_path: Path, monkeypatch, no_network) -> None:
    """SakanaAI's gpo/config_full.yaml, unchanged: its `loss_type: epo` (run_gpo.py's slot for the discovery
    loop's newest loss, run with exec) cannot train here, and the dry run says so; everything else resolves."""
    monkeypatch.chdir(tmp_path)
    recipe = str(HERE / "published" / "sakana-gpo-config_full.yaml")
    result = runner.invoke(app, ["align", recipe, "--dry-run"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "a real run would stop here: loss_type 'epo' is run_gpo.py's slot" in out
    assert "'auto_insert_empty_system_msg' not set: true" in out
    assert "shuffled with seed 42" in out
    assert "beta 0.05" in out and "max_prompt_length 512" in out
    assert list(tmp_path.iterdir()) == []

    # Named, as the paper's own runs named it (train_tldr.sh: the loss types dpo, kto_pair, ..., lrml).
    for name in ("lrml", "dpo", "kto_pair", "bco_pair"):
        named = runner.invoke(app, ["align", recipe, "--dry-run", "--set", f"loss_type={name}"])
        assert named.exit_code == 0, named.output
        assert "a real run would stop here" not in named.output
    refused = runner.invoke(app, ["align", recipe, "-o", str(tmp_path / "out")])
    assert refused.exit_code == 2 and "loss_type 'epo' is run_gpo.py's slot" in refused.output
    assert not (tmp_path / "out").exists()


def flat(text: str) -> str:
    """Rich's table cells wrap; their words, in order, on one line."""
    return " ".join(text.replace("│", " ").split())


def test_dry_run_prints_the_published_global_batch_with_no_accelerate_options(
    repo_root: Path, tmp_path: Path, monkeypatch, no_network
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = str(repo_root / "recipes/zephyr-7b-gemma.yaml")
    result = runner.invoke(app, ["align", recipe, "--dry-run"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "2 per device x 64 accumulation x 1 process(es) = 128 global; published: 128" in out
    assert "gradient_accumulation_steps 8 -> 64" in out

    for processes, accumulation in [(2, 32), (4, 16), (8, 8)]:
        result = runner.invoke(app, ["align", recipe, "--dry-run", "--num-processes", str(processes)])
        assert result.exit_code == 0, result.output
        assert f"x {accumulation} accumulation x {processes} process(es) = 128 global" in flat(result.output)
    refused = runner.invoke(app, ["align", recipe, "--dry-run", "--num-processes", "3"])
    assert refused.exit_code == 2
    assert "global_batch_size 128 is not a multiple of 2 per device x 3 process(es) = 6" in refused.output
    assert "process counts that divide it: 1, 2, 4, 8, 16, 32, 64" in refused.output


# --- the memory plan -----------------------------------------------------------------------------------------

# google/gemma-7b's config.json (the architecture of zephyr-7b-gemma-sft-v0.1): the sizes the plan reads.
GEMMA_7B = {
    "architectures": ["GemmaForCausalLM"],
    "model_type": "gemma",
    "hidden_size": 3072,
    "intermediate_size": 24576,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "head_dim": 256,
    "num_hidden_layers": 28,
    "vocab_size": 256000,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-06,
    "hidden_act": "gelu",
    "torch_dtype": "bfloat16",
}


def cache_config(cache: Path, repo_id: str, config: dict) -> None:
    """A Hub model's config.json as the Hugging Face cache holds it after a download (no weights)."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))


def deepspeed_zero3_estimate(parameters: int, largest_layer: int, gpus: int) -> int:
    """DeepSpeed's own ZeRO-3 model-states estimator (the `deepspeed` extra, which `make install` installs), no
    offload, per GPU."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    _, per_gpu, _ = estimate_zero3_model_states_mem_needs(
        parameters, largest_layer, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=False, cpu_offload_params=False
    )
    return per_gpu


def test_gemma_7b_parameter_count_is_transformers_own() -> None:
    """The plan counts parameters from config.json alone; transformers, building the model on the meta device,
    counts the same for Gemma-7B, and for the tiny Gemma and SmolLM2 (Llama) shapes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from discopop_cli.train.memory_plan import ModelShape

    smollm2 = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "num_hidden_layers": 30,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    tiny = {**GEMMA_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "head_dim": 16}
    for config in (GEMMA_7B, smollm2, tiny):
        built = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(built)
        counted = sum(p.numel() for p in model.parameters())
        assert ModelShape.from_config(config).parameters == counted
    assert ModelShape.from_config(GEMMA_7B).parameters == 8_537_680_896


def test_memory_plan_matches_deepspeeds_zero3_estimator_for_gemma_7b_on_8_gpus(
    repo_root: Path, tmp_path: Path, monkeypatch, no_network
) -> None:
    import huggingface_hub.constants

    from discopop_cli.train.memory_plan import GB, Launch, ModelShape, TrainSettings, plan_memory

    shape = ModelShape.from_config(GEMMA_7B)
    expected = deepspeed_zero3_estimate(shape.parameters, shape.largest_layer, 8)
    settings = TrainSettings(sequences=4, max_length=1024, activation_checkpointing=True, reference_model=True)
    plan = plan_memory(shape, Launch("zero3", 8), settings)
    assert abs(plan.model_states - expected) / expected < 0.10
    assert plan.total > plan.model_states  # activations and the reference model come on top

    # Through the command: the config in the Hub cache, as after a download of the model.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_config(tmp_path / "hub", "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", GEMMA_7B)
    recipe = str(repo_root / "recipes/zephyr-7b-gemma.yaml")
    result = runner.invoke(app, ["align", recipe, "--dry-run", "--accelerate-config", "zero3", "--num-processes", "8"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "= 128 global" in out
    memory_row = out.split("memory plan ", 1)[1]
    printed = {}
    for term in ("weights", "gradients", "optimizer", "gathered layers"):
        printed[term] = float(memory_row.split(f"{term} ", 1)[1].split(" GB", 1)[0])
    states = sum(printed.values()) * GB
    assert abs(states - expected) / expected < 0.10, (printed, expected / GB)
    assert "ZeRO-3, 8 process(es)" in out

    # One GPU, no accelerate options: 16 bytes a parameter of float32 training, accelerate's own estimate.
    from accelerate.commands.estimate import estimate_training_usage

    single = plan_memory(shape, Launch("single", 1), settings)
    accelerate_estimate = max(estimate_training_usage(4 * shape.parameters, "float32").values())
    assert single.weights + single.gradients + single.optimizer == accelerate_estimate


def test_a_plan_that_does_not_fit_names_a_launch_that_does() -> None:
    from discopop_cli.train.memory_plan import GB, Launch, ModelShape, TrainSettings, plan_memory
    from discopop_cli.train.precision import choose
    from discopop_cli.train.run_plan import RunPlan, fit_advice

    shape = ModelShape.from_config(GEMMA_7B)
    settings = TrainSettings(sequences=4, max_length=1024, activation_checkpointing=True, reference_model=True)
    precision = choose(
        bf16=True, fp16=False, recipe_dtype="bfloat16", peft=False, launch_kind="single", accelerator=True
    )
    run = RunPlan("single", 1, precision, shape, settings, plan_memory(shape, Launch(), settings), "test")
    advice = fit_advice(run, 80 * GB, gpus=1, device_name="NVIDIA H100")
    assert advice.startswith("memory plan: 145.7 GB per device does not fit the 80.0 GB of NVIDIA H100")
    # On the one GPU there is: a LoRA adapter; over the published run's 8: ZeRO-3.
    assert "a LoRA adapter (--set use_peft=true --set lora_target_modules=all-linear) needs 19.2 GB" in advice
    assert "--accelerate-config zero3 --num-processes 8 needs 25.4 GB per device" in advice
    assert fit_advice(run, 200 * GB, gpus=1) is None


def test_memory_plan_is_unknown_without_a_config(repo_root: Path, tmp_path: Path, monkeypatch, no_network) -> None:
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = runner.invoke(app, ["sft", str(repo_root / "recipes/zephyr-7b-gemma-sft.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert (
        "memory plan unknown (no config.json for google/gemma-7b: not a local folder and not in the Hugging Face cache)"
        in out
    )
    assert "wrapped into blocks of max_length" in out
