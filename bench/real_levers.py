"""Each speed lever's share of `discopop align`'s step on a real model, in one process with one model load.

    python bench/real_levers.py MODEL_DIR DATA.jsonl SETTINGS.json [--steps 1] [--rounds 2]

Builds the trainer `discopop align` builds (DiscoPOPTrainer, the process tuned by `speed.tune_process()`, the lean
head, activation checkpointing off as the memory plan decides on this machine) with the settings bench/real_train.py
writes, then times optimizer steps (`training_step`, optimizer step, zero_grad) on the same batches with every lever
on, and with each one turned off in turn, as TRL would run it:

- `lean-head`: TRL's fused LM head (every position scored, its CPU tile code);
- `checkpointing`: activation checkpointing on with TRL's `enable_input_require_grads` (TRL's default);
- `allocator`: glibc malloc's defaults (mmap above the threshold, the heap trimmed);
- `threads`: torch's default thread count, shown only where it differs from one per physical core.

Each round times every setting once (all on, then each lever off), every other round in reverse order (ABBA), and
each figure is the median step time over the rounds. The last line
printed is a JSON object {"all on": s, "<lever>": s, ...}.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import tempfile
import time
import types
import warnings
from typing import Any

# glibc's defaults, restored to measure the allocator lever (malloc.h: M_TRIM_THRESHOLD, M_MMAP_MAX).
_GLIBC_DEFAULTS = {-1: 128 * 1024, -4: 65536}


def build(model: str, data: str, settings: dict[str, Any], output: str) -> Any:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig

    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer
    from discopop_cli.train.injection import plan_losses

    dataset = load_dataset("json", data_files=data, split="train").select_columns(["chosen", "rejected"])
    dataset = dataset.shuffle(seed=settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = settings["chat_template"]
    training = dict(settings["training"])
    config = DPOConfig(output_dir=output, activation_checkpointing=False,
                       model_init_kwargs=settings["model_init_kwargs"], **training)  # fmt: skip
    plan = plan_losses(training["loss_type"], None, training, None)
    return DiscoPOPTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **settings["lora"]),
        loss_plan=plan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("settings")
    parser.add_argument("--steps", type=int, default=1, help="Timed steps per setting and round.")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds, every other one in reverse order.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with open(args.settings, encoding="utf-8") as handle:
        settings = json.load(handle)

    import torch

    from discopop_cli.train import speed

    default_threads = torch.get_num_threads()
    speed.tune_process()
    tuned_threads = torch.get_num_threads()
    libc = ctypes.CDLL(None)

    with tempfile.TemporaryDirectory() as output:
        trainer = build(args.model, args.data, settings, output)
        model = trainer.model
        base = model.get_base_model()
        lean_forward = base.forward
        trl_function = getattr(lean_forward.__func__, "trl_function", None)
        trl_forward = types.MethodType(trl_function, base) if trl_function is not None else None
        loader = iter(trainer.get_train_dataloader())
        batches = [trainer._prepare_inputs(next(loader)) for _ in range(args.steps)]
        model.train()
        trainer.create_optimizer_and_scheduler(num_training_steps=1000)
        trainer.current_gradient_accumulation_steps = 1

        def steps() -> list[float]:
            times = []
            for batch in batches:
                started = time.perf_counter()
                trainer.training_step(model, batch)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()
                times.append(time.perf_counter() - started)
            return times

        def lean_off() -> None:
            base.forward = trl_forward

        def lean_on() -> None:
            base.forward = lean_forward

        def checkpointing_on() -> None:  # as transformers' Trainer and TRL turn it on for a PEFT model
            base.gradient_checkpointing_enable()
            model.enable_input_require_grads()

        def checkpointing_off() -> None:
            base.gradient_checkpointing_disable()
            model.disable_input_require_grads()

        def allocator_off() -> None:
            for option, value in _GLIBC_DEFAULTS.items():
                libc.mallopt(option, value)

        def allocator_on() -> None:
            speed.keep_freed_memory()

        levers = {
            "lean-head": (lean_off, lean_on) if trl_forward is not None else None,
            "checkpointing": (checkpointing_on, checkpointing_off),
            "allocator": (allocator_off, allocator_on),
            "threads": (lambda: torch.set_num_threads(default_threads), lambda: torch.set_num_threads(tuned_threads))
            if default_threads != tuned_threads
            else None,
        }
        steps()  # warm-up: first-call costs fall on no setting
        times: dict[str, list[float]] = {"all on": []}
        settings_order = ["all on", *(lever for lever, switch in levers.items() if switch is not None)]
        for round_ in range(args.rounds):
            for setting in settings_order if round_ % 2 == 0 else reversed(settings_order):
                if setting == "all on":
                    times["all on"] += steps()
                    continue
                off, on = levers[setting]
                off()
                times.setdefault(setting, []).extend(steps())
                on()
    print(json.dumps({name: statistics.median(values) for name, values in times.items()}))


if __name__ == "__main__":
    main()
