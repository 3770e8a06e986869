"""What a run will be before it starts: the launch, the precision plan and the memory plan of a validated recipe.

`plan_run` applies the precision plan to the recipe (the dtype the weights load in) and sizes the memory for the
model's config.json when it is here: a local model folder, or the Hugging Face cache of a Hub id. Nothing is
downloaded; without a config the memory plan is "unknown". `check_fits` compares the plan with the GPU's memory
before any weights load, and names a launch that would fit when this one does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from discopop_cli.train import memory_plan as memory
from discopop_cli.train.precision import PrecisionPlan, choose

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class RunPlan:
    kind: str
    processes: int
    precision: PrecisionPlan
    shape: memory.ModelShape | None
    settings: memory.TrainSettings | None
    memory: memory.MemoryPlan | None
    config_source: str  # where the model's config.json was read, or why it was not

    def memory_line(self) -> str:
        where = {"single": "one device", "ddp": "DDP"}.get(self.kind, self.kind.upper().replace("ZERO", "ZeRO-"))
        if self.memory is None:
            return f"unknown ({self.config_source})"
        return (
            f"{memory.describe(self.memory)} ({where}, {self.processes} process(es); config from {self.config_source})"
        )


def plan_run(recipe: Any, kind: str, processes: int, *, accelerator: bool) -> RunPlan:
    """The precision plan applied to `recipe` (its `dtype`), and the memory plan per device."""
    training, model = recipe.training, recipe.model
    peft = bool(model.get("use_peft"))
    precision = choose(
        bf16=bool(training.get("bf16")),
        fp16=bool(training.get("fp16")),
        recipe_dtype=model.get("dtype"),
        peft=peft,
        launch_kind=kind,
        accelerator=accelerator,
        master_weights=recipe.extras.get("master_weights") or "float32",
        reference=recipe.task == "align",
    )
    if accelerator:
        model["dtype"] = precision.load_dtype
    config, source = find_model_config(str(model.get("model_name_or_path")), model.get("model_revision"))
    shape = settings = plan = None
    if config is not None:
        try:
            shape = memory.ModelShape.from_config(config)
        except (KeyError, TypeError, ValueError):
            source = f"{source} has no decoder sizes (hidden_size, num_hidden_layers, ...) to plan with"
    if shape is not None:
        settings = train_settings(recipe, shape, precision)
        plan = memory.plan_memory(shape, memory.Launch(kind, processes), settings)
    return RunPlan(kind, processes, precision, shape, settings, plan, source)


def train_settings(recipe: Any, shape: memory.ModelShape, precision: PrecisionPlan) -> memory.TrainSettings:
    training, model = recipe.training, recipe.model
    per_device = int(training.get("per_device_train_batch_size", 8))
    lora = 0
    if model.get("use_peft"):
        lora = shape.lora_parameters(int(model.get("lora_r") or 16), model.get("lora_target_modules"))
    base_bytes = 0.5 if model.get("load_in_4bit") else 1 if model.get("load_in_8bit") else None
    checkpointing = training.get("activation_checkpointing", training.get("gradient_checkpointing", False))
    return memory.TrainSettings(
        sequences=2 * per_device if recipe.task == "align" else per_device,
        max_length=int(training.get("max_length") or 1024),
        activation_checkpointing=bool(checkpointing),
        lora_parameters=lora,
        base_bytes=base_bytes or _DTYPE_BYTES.get(precision.load_dtype, 4),
        master_weights=precision.master,
        reference_model=recipe.task == "align" and not model.get("use_peft"),
        reference_bytes=_DTYPE_BYTES.get(precision.reference_dtype or "float32", 4),
    )


def find_model_config(name: str, revision: str | None) -> tuple[dict[str, Any] | None, str]:
    """The model's config.json from a local folder (a LoRA adapter's: its base model's) or the Hub cache; never
    the network. Returns (config, where it was found) or (None, why not)."""
    folder = Path(name).expanduser()
    path: Path | None = None
    if folder.is_dir():
        if (folder / "config.json").is_file():
            path = folder / "config.json"
        elif (folder / "adapter_config.json").is_file():
            base = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
            if base and base != name:
                return find_model_config(str(base), None)
        if path is None:
            return None, f"{name} has no config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if not isinstance(cached, str):
            return None, f"no config.json for {name}: not a local folder and not in the Hugging Face cache"
        path = Path(cached)
    config = _read_json(path)
    if not config:
        return None, f"{path} is not a JSON object"
    return config, str(path) if folder.is_dir() else f"the Hugging Face cache ({name})"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def check_fits(run: RunPlan) -> str | None:
    """With a CUDA GPU here: a one-line warning when the plan exceeds its memory, naming a launch that fits."""
    import torch

    if run.memory is None or not torch.cuda.is_available():
        return None
    device = torch.cuda.get_device_properties(0)
    return fit_advice(run, device.total_memory, torch.cuda.device_count(), device.name)


def fit_advice(run: RunPlan, device_bytes: int, gpus: int, device_name: str = "this GPU") -> str | None:
    """None when the plan fits `device_bytes`; else what does not fit and launches that would: sharded over the
    GPUs here, a LoRA adapter on them, or sharded over 8 GPUs (the published run's count)."""
    if run.memory is None or run.shape is None or run.settings is None or run.memory.total <= device_bytes:
        return None
    shape, settings = run.shape, run.settings
    options: list[str] = []
    for count in sorted({n for n in (gpus, 8) if n > 1}):
        for kind in ("zero3", "fsdp"):
            plan = memory.plan_memory(shape, memory.Launch(kind, count), settings)
            if plan.total <= device_bytes:
                options.append(
                    f"--accelerate-config {kind} --num-processes {count} needs {memory.gigabytes(plan.total)} per device"
                )
                break
    if not settings.lora_parameters:
        lora = replace(settings, lora_parameters=shape.lora_parameters(16, "all-linear"), reference_model=False)
        plan = memory.plan_memory(shape, memory.Launch(run.kind, run.processes), lora)
        if plan.total <= device_bytes:
            option = "a LoRA adapter (--set use_peft=true --set lora_target_modules=all-linear)"
            options.insert(1 if gpus > 1 and options else 0, f"{option} needs {memory.gigabytes(plan.total)}")
    need, have = memory.gigabytes(run.memory.total), memory.gigabytes(device_bytes)
    fits = "; ".join(options[:2]) if options else "nor does any launch tried"
    return f"memory plan: {need} per device does not fit the {have} of {device_name}; {fits}"
