"""What a recipe resolves to, as a rich table (`--dry-run`) and as model-card lines."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from discopop_cli.core.console import out


def batch_line(config: Any, processes: int) -> str:
    per_device = config.per_device_train_batch_size
    accumulation = config.gradient_accumulation_steps
    total = per_device * accumulation * processes
    return f"{per_device} per device x {accumulation} accumulation x {processes} process(es) = {total} global"


def _loss_formula(name: str) -> str:
    from discopop_cli import losses

    if losses.is_trl_loss(name):
        return f"TRL's built-in '{name}'"
    return losses.get_spec(name).formula


def card_losses(plan: Any, config: Any) -> list[dict[str, Any]]:
    rows = []
    for name, weight, params, source in plan.describe():
        rows.append(
            {
                "name": name,
                "weight": weight,
                "params": params,
                "source": source,
                "formula": _loss_formula(name),
            }
        )
    return rows


def card_hyperparameters(config: Any, processes: int) -> list[tuple[str, Any]]:
    total = config.per_device_train_batch_size * config.gradient_accumulation_steps * processes
    rows: list[tuple[str, Any]] = [("learning_rate", config.learning_rate)]
    if hasattr(config, "beta"):  # preference optimisation only
        rows.append(("beta", config.beta))
    rows += [
        ("train_batch_size", config.per_device_train_batch_size),
        ("eval_batch_size", config.per_device_eval_batch_size),
        ("seed", config.seed),
        ("num_devices", processes),
        ("gradient_accumulation_steps", config.gradient_accumulation_steps),
        ("total_train_batch_size", total),
        (
            "optimizer",
            f"{_value(config.optim)} with betas=({config.adam_beta1},{config.adam_beta2}) and epsilon={config.adam_epsilon}",
        ),
        ("lr_scheduler_type", _value(config.lr_scheduler_type)),
        ("warmup_steps", config.warmup_steps),
        ("num_epochs", config.num_train_epochs),
        ("max_length", config.max_length),
    ]
    if config.max_steps and config.max_steps > 0:
        rows.append(("max_steps", config.max_steps))
    if getattr(config, "packing", False):
        rows.append(("packing", _value(config.packing_strategy)))
    if getattr(config, "assistant_only_loss", False):
        rows.append(("assistant_only_loss", True))
    return rows


def _value(option: Any) -> str:
    """Enum options (SchedulerType.COSINE) as the recipe spells them (cosine)."""
    return str(getattr(option, "value", option))


def sft_loss_line(config: Any) -> str:
    """Which tokens the SFT loss reads, as SFTConfig decides it."""
    if config.assistant_only_loss:
        where = "assistant turns only"
    elif config.completion_only_loss is False:
        where = "whole sequences"
    elif config.completion_only_loss:
        where = "completions only"
    else:
        where = "completions of prompt/completion data, whole conversations otherwise"
    return f"{_value(config.loss_type)} on {where}"


def print_recipe_table(recipe: Any, config: Any, plan: Any = None, *, processes: int = 1) -> None:
    """The dry-run table; `plan` is align's loss plan (None for sft); `processes` all processes of the run."""
    from discopop_cli.data.sources import count_rows

    table = Table(title=f"{recipe.path.name} ({recipe.task}, dry run: nothing trained or written)", show_lines=False)
    table.add_column("setting", style="bold")
    table.add_column("value", overflow="fold")

    def row(setting: str, value: str) -> None:
        table.add_row(setting, escape(value))

    model = recipe.model
    model_line = str(model.get("model_name_or_path"))
    extras = []
    if model.get("dtype"):
        extras.append(f"dtype {model['dtype']}")
    if model.get("use_peft"):
        extras.append(f"LoRA r={model.get('lora_r', 16)} alpha={model.get('lora_alpha', 32)}")
    if model.get("load_in_4bit"):
        extras.append("4-bit")
    row("model", model_line + (f" ({', '.join(extras)})" if extras else ""))
    if recipe.extras.get("tokenizer_name_or_path"):
        row("tokenizer", str(recipe.extras["tokenizer_name_or_path"]))
    if recipe.extras.get("chat_template"):
        from discopop_cli.train.chat_tokens import template_tokens

        tokens = template_tokens(recipe.extras["chat_template"])
        row("chat template", "from the recipe" + (f" (turn tokens {', '.join(tokens)})" if tokens else ""))
    for spec in recipe.data.train:
        rows = count_rows(spec)
        count = f"{rows} rows" if rows is not None else "Hub dataset, rows counted at load"
        weight = f", weight {spec.weight}" if spec.weight is not None else ""
        row("train data", f"{spec.label} ({count}{weight})")
    with_eval = str(config.eval_strategy) not in ("no", "IntervalStrategy.NO")
    if with_eval:
        for spec in recipe.data.eval:
            rows = count_rows(spec)
            row("eval data", f"{spec.label} ({f'{rows} rows' if rows is not None else 'Hub dataset'})")
        if recipe.data.test_split_size:
            row("eval data", f"test_split_size {recipe.data.test_split_size} of the training mixture")
    else:
        row("eval", "off (eval_strategy: no)")
    if plan is not None:
        for name, weight, params, source in plan.describe():
            detail = ", ".join(f"{k}={v}" for k, v in params.items())
            weight_text = f" x {weight}" if len(plan.describe()) > 1 else ""
            row("loss", f"{name}{weight_text} [{source}]" + (f" ({detail})" if detail else ""))
        row("beta", str(config.beta))
    else:
        row("loss", sft_loss_line(config))
        if config.packing:
            row("packing", f"{_value(config.packing_strategy)} into blocks of max_length")
    row("batch", batch_line(config, processes))
    row(
        "schedule",
        f"lr {config.learning_rate}, {_value(config.lr_scheduler_type)}, warmup {config.warmup_steps}, "
        f"{config.num_train_epochs} epoch(s)" + (f", max_steps {config.max_steps}" if config.max_steps > 0 else ""),
    )
    lengths = f"max_length {config.max_length}"
    if recipe.extras.get("max_prompt_length"):
        lengths += f", max_prompt_length {recipe.extras['max_prompt_length']}"
    row("lengths", lengths)
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "float32"
    device = "CPU" if config.use_cpu else "accelerator"
    row(
        "precision",
        f"{precision} on {device}" + (", gradient checkpointing" if config.gradient_checkpointing else ""),
    )
    row("output_dir", str(config.output_dir))
    out.print(table)
