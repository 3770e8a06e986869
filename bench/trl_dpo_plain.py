"""The reference for `discopop align`: what a user would write with TRL alone, `DPOTrainer(loss_type="discopop")`.

    python bench/trl_dpo_plain.py MODEL_DIR DATA.jsonl OUTPUT_DIR [--epochs 2] [--precompute-ref-log-probs]

The settings are those of the benchmark's recipe (bench/align_train.py), as `discopop align` resolves them on a
CPU: float32, no bf16, the data shuffled with the mixture's seed. The last line printed is a JSON object with the
trainer's own `train_runtime` and `train_loss`.
"""

from __future__ import annotations

import argparse
import json

from datasets import load_dataset
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer

SEED = 42


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--precompute-ref-log-probs", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset("json", data_files=args.data, split="train").select_columns(["chosen", "rejected"])
    dataset = dataset.shuffle(seed=SEED)
    config = DPOConfig(
        output_dir=args.output,
        loss_type="discopop",
        discopop_tau=0.05,
        beta=0.5,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        max_length=128,
        precompute_ref_log_probs=args.precompute_ref_log_probs,
        eval_strategy="no",
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        bf16=False,
        fp16=False,
        use_cpu=True,
        model_init_kwargs={"dtype": "float32", "use_safetensors": True},
    )
    trainer = DPOTrainer(
        model=args.model,
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(args.model),
    )
    result = trainer.train()
    trainer.save_model(args.output)
    print(json.dumps({"train_runtime": result.metrics["train_runtime"], "train_loss": result.training_loss}))


if __name__ == "__main__":
    main()
