"""The reference for the real-model rows: what a user would write with TRL alone, for align (DPOTrainer, LoRA) and
sft (SFTTrainer, full fine-tune), with the settings of bench/real_train.py.

    python bench/trl_real_plain.py {align,sft} MODEL_DIR DATA.jsonl OUTPUT_DIR SETTINGS.json

SETTINGS.json is the dictionary bench/real_train.py (and bench/gpu/gemma_zephyr.py) also writes `discopop`'s recipe
from: `training` (trainer config fields, device and precision included), `model_init_kwargs`, `lora` (peft
LoraConfig fields, or null for a full fine-tune), `chat_template`, `seed`. TRL's own defaults stand for everything
else (on a CPU: its fused LM head scoring every position, activation checkpointing on), as they would in a user's
script. The last line printed is a JSON object: `train_runtime`, `steps`, the logged `losses`, the tokens trained
on (`num_tokens`) and, on a GPU, `peak_gpu_mib` (torch's peak allocated memory).
"""

from __future__ import annotations

import argparse
import json

from datasets import load_dataset
from transformers import AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["align", "sft"])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("settings")
    args = parser.parse_args()
    with open(args.settings, encoding="utf-8") as handle:
        settings = json.load(handle)

    columns = ["chosen", "rejected"] if args.task == "align" else ["messages"]
    dataset = load_dataset("json", data_files=args.data, split="train").select_columns(columns)
    dataset = dataset.shuffle(seed=settings["seed"])  # as discopop's dataset_mixture does with its seed
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.chat_template = settings["chat_template"]
    common = dict(output_dir=args.output, **settings["training"])
    common["model_init_kwargs"] = settings["model_init_kwargs"]
    if args.task == "align":
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=args.model,
            args=DPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **settings["lora"]) if settings["lora"] else None,
        )
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=args.model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer
        )
    result = trainer.train()
    history = trainer.state.log_history
    found = {"train_runtime": result.metrics["train_runtime"], "steps": trainer.state.global_step,
             "losses": [entry["loss"] for entry in history if "loss" in entry],
             "num_tokens": max((entry.get("num_tokens", 0) for entry in history), default=0)}  # fmt: skip
    import torch

    if torch.cuda.is_available():
        found["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(found))


if __name__ == "__main__":
    main()
