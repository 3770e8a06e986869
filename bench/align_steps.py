"""The injection's cost per training step, measured where machine noise cancels out.

    python bench/align_steps.py MODEL_DIR DATA.jsonl [--passes 3]

Builds, in one process, the trainer `discopop align` uses (`discopop_cli.train.discopop_trainer.DiscoPOPTrainer` with the
planned `discopop` loss) and TRL's own `DPOTrainer(loss_type="discopop")`, with the same settings as
bench/align_train.py, then times `training_step` (policy and reference forward, loss, backward) of each on the
same batches, alternating batch by batch. Whole-process timings on a shared 2-core machine drift by more than the
2% this is meant to resolve; here both sides see the same drift. Prints the medians (ms) as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from typing import Any


def trainers(model: str, data: str, output: str) -> dict[str, Any]:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer
    from discopop_cli.train.injection import plan_losses

    dataset = load_dataset("json", data_files=data, split="train").select_columns(["chosen", "rejected"])
    dataset = dataset.shuffle(seed=42)
    tokenizer = AutoTokenizer.from_pretrained(model)
    settings = dict(output_dir=output, loss_type="discopop", discopop_tau=0.05, beta=0.5, learning_rate=1e-4)
    settings |= dict(per_device_train_batch_size=8, max_length=128, report_to="none", seed=42, save_strategy="no")
    settings |= dict(bf16=False, fp16=False, use_cpu=True, model_init_kwargs={"dtype": "float32"})
    plan = plan_losses("discopop", None, {"discopop_tau": 0.05}, None)
    common = dict(model=model, train_dataset=dataset, processing_class=tokenizer)
    return {
        "discopop": DiscoPOPTrainer(args=DPOConfig(**settings), loss_plan=plan, **common),
        "trl": DPOTrainer(args=DPOConfig(**settings), **common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--passes", type=int, default=3, help="Passes over the data (18 batches of 8 pairs each).")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as output:
        pair = trainers(args.model, args.data, output)
        batches = list(pair["trl"].get_train_dataloader())
        for trainer in pair.values():
            trainer.model.train()
            trainer.create_optimizer_and_scheduler(num_training_steps=len(batches) * args.passes)
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which is not run here
        times: dict[str, list[float]] = {name: [] for name in pair}
        for step, batch in enumerate(batches * args.passes):
            for name in pair if step % 2 == 0 else reversed(list(pair)):
                trainer = pair[name]
                started = time.perf_counter()
                trainer.training_step(trainer.model, batch)
                times[name].append((time.perf_counter() - started) * 1000)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()
    print(
        json.dumps(
            {name: statistics.median(values) for name, values in times.items()} | {"steps": len(batches) * args.passes}
        )
    )


if __name__ == "__main__":
    main()
