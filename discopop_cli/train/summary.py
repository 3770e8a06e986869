"""What a recipe resolves to, as a rich table (`--dry-run`) and as model-card lines."""

from __future__ import annotations

from collections.abc import Iterator
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


def print_recipe_table(recipe: Any, config: Any, plan: Any = None, *, processes: int = 1, run: Any = None) -> None:
    """The dry-run table; `plan` is align's loss plan (None for sft); `processes` all processes of the run; `run`
    the precision and memory plans (run_plan.RunPlan)."""
    table = Table(title=f"{recipe.path.name} ({recipe.task}, dry run: nothing trained or written)", show_lines=False)
    table.add_column("setting", style="bold")
    table.add_column("value", overflow="fold")
    for rows in (
        _model_rows(recipe),
        _data_rows(recipe, config),
        _loss_rows(config, plan),
        _run_rows(recipe, config, processes, run),
    ):
        for setting, value in rows:
            table.add_row(setting, escape(value))
    out.print(table)


Rows = Iterator[tuple[str, str]]


def _model_rows(recipe: Any) -> Rows:
    model = recipe.model
    extras = []
    if model.get("dtype"):
        extras.append(f"dtype {model['dtype']}")
    if model.get("use_peft"):
        extras.append(f"LoRA r={model.get('lora_r', 16)} alpha={model.get('lora_alpha', 32)}")
    if model.get("load_in_4bit"):
        extras.append("4-bit")
    yield "model", str(model.get("model_name_or_path")) + (f" ({', '.join(extras)})" if extras else "")
    if recipe.extras.get("tokenizer_name_or_path"):
        yield "tokenizer", str(recipe.extras["tokenizer_name_or_path"])
    if recipe.extras.get("chat_template"):
        from discopop_cli.train.chat_tokens import template_tokens

        tokens = template_tokens(recipe.extras["chat_template"])
        yield "chat template", "from the recipe" + (f" (turn tokens {', '.join(tokens)})" if tokens else "")


def _data_rows(recipe: Any, config: Any) -> Rows:
    from discopop_cli.data.sources import count_rows

    def left_out(spec: Any) -> str:
        return f", {len(spec.drop_rows)} bad rows left out" if spec.drop_rows else ""

    for spec in recipe.data.train:
        rows = count_rows(spec)
        count = (
            f"{rows - len(spec.drop_rows)} rows{left_out(spec)}"
            if rows is not None
            else "Hub dataset, rows counted at load"
        )
        weight = f", weight {spec.weight}" if spec.weight is not None else ""
        yield "train data", f"{spec.label} ({count}{weight})"
    yield "data preparation", _preparation(recipe)
    if str(config.eval_strategy) in ("no", "IntervalStrategy.NO"):
        yield "eval", "off (eval_strategy: no)"
        return
    for spec in recipe.data.eval:
        rows = count_rows(spec)
        count = f"{rows - len(spec.drop_rows)} rows{left_out(spec)}" if rows is not None else "Hub dataset"
        yield "eval data", f"{spec.label} ({count})"
    if recipe.data.test_split_size:
        yield "eval data", f"test_split_size {recipe.data.test_split_size} of the training mixture"


def _preparation(recipe: Any) -> str:
    parts = [f"shuffle seed {recipe.data.seed}"]
    if recipe.extras.get("auto_insert_empty_system_msg"):
        parts.append("an empty system turn where the template knows one")
    source = recipe.extras.get("decontaminate_humaneval")
    if source:
        from discopop_cli.data.decontaminate import humaneval_source

        parts.append(f"rows quoting HumanEval removed ({humaneval_source(source)}, loaded at the start of a run)")
    return ", ".join(parts)


def _loss_rows(config: Any, plan: Any) -> Rows:
    if plan is None:  # sft
        yield "loss", sft_loss_line(config)
        if config.packing:
            yield "packing", f"{_value(config.packing_strategy)} into blocks of max_length"
        return
    described = plan.describe()
    if plan.pending:
        yield "loss", "epo: the discovery loop's slot, no loss named (a real run stops; see the notice)"
    for name, weight, params, source in described:
        detail = ", ".join(f"{k}={v}" for k, v in params.items())
        weight_text = f" x {weight}" if len(described) > 1 else ""
        yield "loss", f"{name}{weight_text} [{source}]" + (f" ({detail})" if detail else "")
    yield "beta", str(config.beta)


def _run_rows(recipe: Any, config: Any, processes: int, run: Any) -> Rows:
    stated = recipe.extras.get("global_batch_size")
    batch = batch_line(config, processes)
    if stated is not None:
        batch += f"; published: {stated} (the recipe's global_batch_size)"
    yield "batch", batch
    steps = f", max_steps {config.max_steps}" if config.max_steps > 0 else ""
    yield (
        "schedule",
        f"lr {config.learning_rate}, {_value(config.lr_scheduler_type)}, warmup {config.warmup_steps}, "
        f"{config.num_train_epochs} epoch(s){steps}",
    )
    lengths = f"max_length {config.max_length}"
    limit = recipe.extras.get("max_prompt_length")
    if limit and config.max_length:
        lengths += (
            f", max_prompt_length {limit}; truncation as TRL 0.8.6: a pair too long keeps the prompt's last "
            f"{limit} tokens, then each answer's first {config.max_length - limit}"
        )
    yield "lengths", lengths
    if run is not None:
        yield "precision", run.precision.describe()
    device = "CPU" if config.use_cpu else "accelerator"
    if config.use_cpu and run is not None and run.kind in ("fsdp", "zero1", "zero2", "zero3"):
        device = f"CPU here; {run.kind} runs on GPUs, planned above for them"
    checkpointing = ", activation checkpointing" if config.gradient_checkpointing else ""
    yield "device", f"{device}{checkpointing}"
    if run is not None:
        yield "memory plan", run.memory_line()
    yield "output_dir", str(config.output_dir)
