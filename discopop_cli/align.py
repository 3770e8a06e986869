"""`discopop align RECIPE`: recipe, model, data, trainer, train, save — in that order."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from discopop_cli.console import notice, out
from discopop_cli.errors import UserError


def run_align(
    recipe_path: Path,
    *,
    overrides: list[str],
    output_dir: Path | None,
    dry_run: bool,
    force: bool,
) -> None:
    from discopop_cli import recipes, trainer
    from discopop_cli.outputs import check_destination

    # Recipe: everything is validated before any model, dataset or file is touched.
    trainer.check_trl()
    recipe = recipes.load_recipe(recipe_path, "align", overrides=overrides, output_dir=output_dir)
    loss_plan = trainer.plan_losses(
        recipe.training.get("loss_type"),
        recipe.training.get("loss_weights"),
        recipe.training,
        recipe.extras.get("loss_kwargs"),
    )
    recipes.check_no_accelerator(recipe)
    config = recipe.training_config()
    model_args = recipe.model_config()
    trainer.check_plan_supported(loss_plan, config)
    destination = Path(config.output_dir)

    if dry_run:
        from discopop_cli.summary import print_recipe_table

        print_recipe_table(recipe, config, loss_plan)
        try:
            check_destination(destination, force=force)
        except UserError as exc:
            notice(f"a real run would stop here: {exc}")
        return
    check_destination(destination, force=force)
    _train(recipe, config, model_args, loss_plan, destination)


def _load_tokenizer(recipe: Any, model_args: Any, config: Any) -> Any:
    from transformers import AutoTokenizer

    name = recipe.extras.get("tokenizer_name_or_path") or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=config.trust_remote_code
        )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"could not load the tokenizer of {name}: {first}") from None
    if recipe.extras.get("chat_template"):
        tokenizer.chat_template = recipe.extras["chat_template"]
    if not tokenizer.chat_template:
        notice(f"{name} has no chat template; conversational data needs one (set chat_template in the recipe)")
    return tokenizer


def _model_init_kwargs(model_args: Any, config: Any) -> dict[str, Any]:
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": config.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        "use_safetensors": True,  # safe by default: never unpickle weights
    }
    kwargs.update(config.model_init_kwargs or {})
    return {k: v for k, v in kwargs.items() if v is not None}


def _train(recipe: Any, config: Any, model_args: Any, loss_plan: Any, destination: Path) -> None:
    from trl import get_peft_config, get_quantization_config

    from discopop_cli import data
    from discopop_cli.outputs import promote, staging_dir
    from discopop_cli.trainer import build_trainer_class

    started = time.monotonic()
    # TRL calls transformers' gradient_checkpointing_* aliases; their deprecation notes are not the user's to fix.
    warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
    tokenizer = _load_tokenizer(recipe, model_args, config)
    with_eval = str(config.eval_strategy) not in ("no", "IntervalStrategy.NO")
    train_dataset, eval_dataset = data.load_datasets(recipe.data, with_eval=with_eval)
    for dataset, what in [(train_dataset, "align"), (eval_dataset, "align (eval data)")]:
        if dataset is not None:
            data.require_columns(dataset, {"chosen", "rejected"}, what)
    if recipe.extras.get("auto_insert_empty_system_msg"):
        train_dataset = data.insert_empty_system_message(train_dataset, tokenizer.chat_template)
        if eval_dataset is not None:
            eval_dataset = data.insert_empty_system_message(eval_dataset, tokenizer.chat_template)

    staging = staging_dir(destination)
    config.output_dir = str(staging)
    config.model_init_kwargs = _model_init_kwargs(model_args, config)
    trainer_cls = build_trainer_class()
    try:
        dpo = trainer_cls(
            model=model_args.model_name_or_path,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
            quantization_config=get_quantization_config(model_args),
            loss_plan=loss_plan,
            max_prompt_length=recipe.extras.get("max_prompt_length"),
        )
        if dpo.prompts_truncated:
            notice(
                f"max_prompt_length: {dpo.prompts_truncated} prompt(s) cut to their last "
                f"{recipe.extras['max_prompt_length']} tokens"
            )
        dpo.train(resume_from_checkpoint=config.resume_from_checkpoint)
        if dpo.accelerator.is_main_process:
            _save(dpo, recipe, config, model_args, loss_plan, staging)
        dpo.accelerator.wait_for_everyone()
    except BaseException:
        if not any(staging.glob("checkpoint-*")):
            shutil.rmtree(staging, ignore_errors=True)
        else:
            notice(f"training stopped; checkpoints kept in {staging}")
        raise
    if dpo.accelerator.is_main_process:
        promote(staging, destination)
        config.output_dir = str(destination)
        _report(dpo, destination, time.monotonic() - started)


def _save(dpo: Any, recipe: Any, config: Any, model_args: Any, loss_plan: Any, folder: Path) -> None:
    from discopop_cli import recipes
    from discopop_cli.card import render_card
    from discopop_cli.summary import card_hyperparameters, card_losses

    dpo.save_model(str(folder))  # model (safetensors) and tokenizer with its chat template
    # Trainer pickles its arguments; recipe.yaml says the same in a form that is safe to open.
    (folder / "training_args.bin").unlink(missing_ok=True)
    dpo.state.save_to_json(str(folder / "trainer_state.json"))
    resolved = {**recipe.model, **recipe.training, **recipe.extras, "dataset_mixture": recipe.data.as_dict()}
    resolved["output_dir"] = recipe.training.get("output_dir")
    (folder / "recipe.yaml").write_text(recipes.dump_resolved(resolved), encoding="utf-8")
    model_type = getattr(dpo.model.config, "model_type", "")
    card = render_card(
        model_name=Path(recipe.training["output_dir"]).name,
        base_model=str(model_args.model_name_or_path),
        datasets=[spec.id for spec in recipe.data.train],
        method="DPO" if not loss_plan.registry else "preference optimisation (DiscoPOP loss family)",
        losses=card_losses(loss_plan, config),
        hyperparameters=card_hyperparameters(config, dpo.accelerator.num_processes),
        log_history=dpo.state.log_history,
        is_gemma=str(model_type).startswith("gemma"),
        peft=bool(model_args.use_peft),
    )
    (folder / "README.md").write_text(card, encoding="utf-8")


def _report(dpo: Any, destination: Path, seconds: float) -> None:
    history = [e for e in dpo.state.log_history if "loss" in e]
    last = history[-1] if history else {}
    parts = [f"{dpo.state.global_step} steps in {seconds:.0f} s"]
    if "loss" in last:
        parts.append(f"last loss {last['loss']:.4f}")
    if "rewards/margins" in last:
        parts.append(f"reward margin {last['rewards/margins']:.4f}")
    out.print(f"[green]aligned:[/] {destination} ({', '.join(parts)})", highlight=False, soft_wrap=True)
