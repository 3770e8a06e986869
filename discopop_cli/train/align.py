"""`discopop align RECIPE`: recipe, model, data, trainer, train, save — in that order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice
from discopop_cli.core.errors import UserError
from discopop_cli.train.launch import LaunchOptions, resolve_processes


def run_align(
    recipe_path: Path,
    *,
    overrides: list[str],
    output_dir: Path | None,
    dry_run: bool,
    force: bool,
    resume: bool = False,
    launch: LaunchOptions | None = None,
    bad_rows: Any = None,
    unset: list[str] | None = None,
) -> None:
    from discopop_cli.recipes import load as recipes
    from discopop_cli.train import injection as trainer
    from discopop_cli.train.run_directory import check_run_directory, run_lock
    from discopop_cli.train.shared import plan_the_run

    # Recipe: everything is validated before any model, dataset or file is touched.
    trainer.check_trl()
    recipe = recipes.load_recipe(
        recipe_path, "align", overrides=overrides, unset=unset, output_dir=output_dir, bad_rows=bad_rows
    )
    processes = resolve_processes(recipe, launch)
    loss_plan = trainer.plan_losses(
        recipe.training.get("loss_type"),
        recipe.training.get("loss_weights"),
        recipe.training,
        recipe.extras.get("loss_kwargs"),
    )
    run = plan_the_run(recipe, launch, processes)
    config = recipe.training_config()
    model_args = recipe.model_config()
    trainer.check_plan_supported(loss_plan, config)
    destination = Path(config.output_dir)
    recipes.check_output_apart(recipe)

    if dry_run:
        from discopop_cli.train.shared import show_dry_run

        for reason in loss_plan.pending:
            notice(f"a real run would stop here: {reason}")
        show_dry_run(
            recipe, config, destination, force=force, resume=resume, processes=processes, loss_plan=loss_plan, run=run
        )
        return
    if loss_plan.pending:
        raise UserError(loss_plan.pending[0])
    with run_lock(destination, "align"):
        resume_from = check_run_directory(destination, force=force, resume=resume)
        _train(recipe, config, model_args, loss_plan, run, destination, force=force, resume_from=resume_from)


def _train(
    recipe: Any,
    config: Any,
    model_args: Any,
    loss_plan: Any,
    run: Any,
    destination: Path,
    *,
    force: bool,
    resume_from: Any,
) -> None:
    from trl import get_peft_config, get_quantization_config

    from discopop_cli.core.faults import disk_space
    from discopop_cli.data import sources as data
    from discopop_cli.train import shared as training
    from discopop_cli.train import speed
    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer
    from discopop_cli.train.run_directory import publish, run_directory

    started = time.monotonic()
    speed.tune_process()
    training.check_quantization(model_args)
    training.check_model_config(model_args, config)
    training.quiet_library_deprecations()
    tokenizer = training.load_tokenizer(recipe, model_args, config)
    train_dataset, eval_dataset = data.load_datasets(recipe.data, with_eval=training.eval_enabled(config))
    for dataset, what in [(train_dataset, "align"), (eval_dataset, "align (eval data)")]:
        if dataset is not None:
            data.require_columns(dataset, {"chosen", "rejected"}, what)
    train_dataset, eval_dataset = training.decontaminate(recipe, "align", train_dataset, eval_dataset)
    if recipe.extras.get("auto_insert_empty_system_msg"):
        train_dataset = data.insert_empty_system_message(train_dataset, tokenizer.chat_template)
        if eval_dataset is not None:
            eval_dataset = data.insert_empty_system_message(eval_dataset, tokenizer.chat_template)
    for change in (
        speed.plan_checkpointing(recipe, config, run.processes),
        speed.plan_reference_precompute(
            config, len(train_dataset), recipe_sets_it="precompute_ref_log_probs" in recipe.training
        ),
    ):
        if change:
            notice(change)

    with (
        disk_space(destination, training.output_bytes(model_args), "the trained model"),
        run_directory(destination, command="align", force=force) as final,
    ):
        config.model_init_kwargs = training.model_init_kwargs(model_args, config)
        with (
            training.model_loading(model_args.model_name_or_path),  # TRL loads the model in its constructor
            training.chat_template_faults(recipe, model_args.model_name_or_path),  # and renders the data
        ):
            dpo = DiscoPOPTrainer(
                model=model_args.model_name_or_path,
                ref_model=training.reference_model(model_args, config, run.precision),
                args=config,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=tokenizer,
                peft_config=get_peft_config(model_args),
                quantization_config=get_quantization_config(model_args),
                loss_plan=loss_plan,
                max_prompt_length=recipe.extras.get("max_prompt_length"),
            )
        if dpo.prompts_truncated or dpo.answers_truncated:
            limit = recipe.extras["max_prompt_length"]
            notice(
                f"truncation as TRL 0.8.6: {dpo.prompts_truncated} prompt(s) cut to their last {limit} tokens, "
                f"{dpo.answers_truncated} pair(s) with answers cut to {config.max_length - limit} tokens"
            )
        dpo.train(resume_from_checkpoint=str(resume_from) if resume_from else config.resume_from_checkpoint)
        training.save_model(dpo, final)
        if dpo.accelerator.is_main_process:
            _save(dpo, recipe, config, model_args, loss_plan, final)
            publish(final, destination)
        dpo.accelerator.wait_for_everyone()
    if dpo.accelerator.is_main_process:
        training.report(
            dpo,
            destination,
            time.monotonic() - started,
            verb="aligned",
            metrics=[("rewards/margins", "reward margin")],
        )


def _save(dpo: Any, recipe: Any, config: Any, model_args: Any, loss_plan: Any, folder: Path) -> None:
    from discopop_cli.core.model_card import render_card
    from discopop_cli.train import shared as training
    from discopop_cli.train.summary import card_hyperparameters, card_losses

    card = render_card(
        model_name=Path(recipe.training["output_dir"]).name,
        base_model=str(model_args.model_name_or_path),
        datasets=[spec.id for spec in recipe.data.train],
        method="DPO" if not loss_plan.registry else "preference optimisation (DiscoPOP loss family)",
        losses=card_losses(loss_plan, config),
        hyperparameters=card_hyperparameters(config, dpo.accelerator.num_processes),
        log_history=dpo.state.log_history,
        is_gemma=training.is_gemma(dpo.model),
        peft=bool(model_args.use_peft),
    )
    training.write_outputs(dpo, recipe, folder, card)
