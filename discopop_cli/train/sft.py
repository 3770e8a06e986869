"""`discopop sft RECIPE`: supervised fine-tuning through TRL's SFTTrainer — recipe, tokenizer, model, template
tokens, data, trainer, train, save — on the recipe, data and output machinery `discopop align` uses.

The model is loaded here rather than by TRL so that the tokens the chat template brings can be added and their
embedding rows initialised before training (and before a LoRA adapter wraps the model).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice
from discopop_cli.core.errors import UserError, first_line
from discopop_cli.train.launch import LaunchOptions, resolve_processes

# Columns SFTTrainer reads besides the text itself: per-example tool schemas and template arguments.
_PASSENGER_COLUMNS = ("tools", "chat_template_kwargs")
# The card's results table: TRL's SFT metrics, log-history key -> column title.
SFT_RESULT_COLUMNS = [("mean_token_accuracy", "Mean Token Accuracy"), ("entropy", "Entropy")]


def run_sft(
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
    from discopop_cli.train import shared as training
    from discopop_cli.train.chat_tokens import check_template
    from discopop_cli.train.run_directory import check_run_directory, run_lock

    # Recipe: everything is validated before any model, dataset or file is touched.
    trainer.check_trl()
    recipe = recipes.load_recipe(
        recipe_path, "sft", overrides=overrides, unset=unset, output_dir=output_dir, bad_rows=bad_rows
    )
    processes = resolve_processes(recipe, launch)
    _read_template_file(recipe)
    if recipe.extras.get("chat_template") is not None:
        check_template(recipe.extras["chat_template"], recipe.path.name)
    run = training.plan_the_run(recipe, launch, processes)
    config = recipe.training_config()
    model_args = recipe.model_config()
    destination = Path(config.output_dir)
    recipes.check_output_apart(recipe)

    if dry_run:
        training.show_dry_run(recipe, config, destination, force=force, resume=resume, processes=processes, run=run)
        return
    with run_lock(destination, "sft"):
        resume_from = check_run_directory(destination, force=force, resume=resume)
        _train(recipe, config, model_args, destination, force=force, resume_from=resume_from, processes=processes)


def _read_template_file(recipe: Any) -> None:
    """TRL's `chat_template_path` naming a .jinja file is the recipe's `chat_template`, read from that file.

    Read here so the template's tokens go through the same fitting as an inline template (TRL would set the
    template and leave missing tokens to the user). A tokenizer path is read at load time, by
    `_adopt_tokenizer_template`, for the same reason.
    """
    path_text = recipe.training.get("chat_template_path")
    if path_text and recipe.extras.get("chat_template"):
        raise UserError(f"{recipe.path.name}: set either chat_template or chat_template_path, not both")
    if not path_text or not str(path_text).endswith((".jinja", ".j2")):
        return
    path = Path(path_text).expanduser()
    if not path.is_file() and not path.is_absolute():
        path = recipe.path.parent / path_text
    if not path.is_file():
        raise UserError(f"{recipe.path.name}: chat_template_path '{path_text}' is not a file here or beside the recipe")
    recipe.extras["chat_template"] = path.read_text(encoding="utf-8")
    del recipe.training["chat_template_path"]


def _load_model(model_args: Any, config: Any) -> Any:
    from trl import get_quantization_config
    from trl.trainer.utils import create_model_from_path

    from discopop_cli.train.shared import model_init_kwargs, model_loading

    kwargs = model_init_kwargs(model_args, config)
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if config.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # each process holds its own copy; "auto" would spread one over all GPUs
    with model_loading(model_args.model_name_or_path):
        return create_model_from_path(model_args.model_name_or_path, **kwargs)


def _adopt_tokenizer_template(tokenizer: Any, config: Any) -> None:
    """`chat_template_path` naming a tokenizer: take its template; the tokens it needs are fitted like any other."""
    if not config.chat_template_path:
        return
    from transformers import AutoTokenizer

    try:
        source = AutoTokenizer.from_pretrained(config.chat_template_path, trust_remote_code=config.trust_remote_code)
    except OSError as exc:
        raise UserError(f"could not load the chat template of {config.chat_template_path}: {first_line(exc)}") from None
    if not source.chat_template:
        raise UserError(f"chat_template_path {config.chat_template_path} has no chat template; name another")
    tokenizer.chat_template = source.chat_template
    config.chat_template_path = None


def select_sft_columns(dataset: Any, config: Any, what: str, *, has_template: bool) -> Any:
    """Keep the columns of one SFT format: conversations, prompt/completion, ShareGPT, or plain text.

    Hub SFT sets often carry more (deita-10k-v0-sft has a string `prompt` beside `messages`); TRL would read a
    lone `prompt` as half of a prompt/completion pair, so the format is picked here, `messages` first.
    """
    columns = dataset.column_names
    if "messages" in columns:
        keep, conversational = ["messages"], True
    elif {"prompt", "completion"} <= set(columns):
        keep, conversational = ["prompt", "completion"], isinstance(dataset[0]["prompt"], list)
    elif "conversations" in columns:
        keep, conversational = ["conversations"], True
    elif config.dataset_text_field in columns:
        keep, conversational = [config.dataset_text_field], False
    else:
        raise UserError(
            f"{what} needs a 'messages' column (conversations), 'prompt' and 'completion' columns, or a "
            f"'{config.dataset_text_field}' column (plain text; see dataset_text_field); the data has {columns}"
        )
    if config.completion_only_loss and keep != ["prompt", "completion"]:
        raise UserError(
            f"completion_only_loss: true needs prompt/completion data, but {what} is '{keep[0]}'; "
            "for conversations use assistant_only_loss: true instead"
        )
    if conversational and not has_template:
        raise UserError(
            f"{what} is conversational ('{keep[0]}') but the tokenizer has no chat template; "
            "set chat_template in the recipe (or tokenizer_name_or_path to a tokenizer that has one)"
        )
    if config.assistant_only_loss and not conversational:
        raise UserError(
            f"assistant_only_loss: true needs conversational data (lists of messages); {what} is plain text"
        )
    return dataset.select_columns(keep + [c for c in _PASSENGER_COLUMNS if c in columns])


def _check_assistant_masks(tokenizer: Any, config: Any) -> None:
    """assistant_only_loss reads `{% generation %}` markers; TRL can patch only the templates it knows."""
    if not config.assistant_only_loss:
        return
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        raise UserError("assistant_only_loss: true needs a chat template; set chat_template in the recipe")
    if has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise UserError(
            "assistant_only_loss: true needs {% generation %}...{% endgeneration %} around the assistant turns of "
            "the chat template, and TRL cannot add them to this one; add them to chat_template, or train on the "
            "whole conversation (assistant_only_loss: false)"
        ) from None


def _load_data(recipe: Any, config: Any, tokenizer: Any) -> tuple[Any, Any]:
    from discopop_cli.data import sources as data
    from discopop_cli.train.shared import decontaminate, eval_enabled

    train_dataset, eval_dataset = data.load_datasets(recipe.data, with_eval=eval_enabled(config))
    has_template = bool(tokenizer.chat_template)
    train_dataset = select_sft_columns(train_dataset, config, "sft", has_template=has_template)
    if eval_dataset is not None:
        eval_dataset = select_sft_columns(eval_dataset, config, "sft (eval data)", has_template=has_template)
    if recipe.extras.get("auto_insert_empty_system_msg"):
        train_dataset = data.insert_empty_system_message(train_dataset, tokenizer.chat_template)
        if eval_dataset is not None:
            eval_dataset = data.insert_empty_system_message(eval_dataset, tokenizer.chat_template)
    return decontaminate(recipe, "sft", train_dataset, eval_dataset)


def _train(
    recipe: Any, config: Any, model_args: Any, destination: Path, *, force: bool, resume_from: Any, processes: int = 1
) -> None:
    from trl import SFTTrainer, get_peft_config

    from discopop_cli.core.faults import disk_space
    from discopop_cli.train import shared as training
    from discopop_cli.train import speed
    from discopop_cli.train.chat_tokens import fit_template_tokens, trainable_token_indices
    from discopop_cli.train.run_directory import publish, run_directory

    started = time.monotonic()
    speed.tune_process()
    training.check_quantization(model_args)
    training.check_model_config(model_args, config)
    training.quiet_library_deprecations()
    tokenizer = training.load_tokenizer(recipe, model_args, config)
    _adopt_tokenizer_template(tokenizer, config)
    _check_assistant_masks(tokenizer, config)
    train_dataset, eval_dataset = _load_data(recipe, config, tokenizer)

    checkpointing = speed.plan_checkpointing(recipe, config, processes)
    if checkpointing:
        notice(checkpointing)
    model = _load_model(model_args, config)
    fit = fit_template_tokens(model, tokenizer)
    if fit.summary():
        notice(fit.summary())
    peft_config = get_peft_config(model_args)
    if peft_config is not None and fit.new_ids:
        indices = trainable_token_indices(model, fit.new_ids, peft_config.modules_to_save)
        peft_config.trainable_token_indices = indices or None

    with (
        disk_space(destination, training.output_bytes(model_args), "the trained model"),
        run_directory(destination, command="sft", force=force) as final,
    ):
        config.model_init_kwargs = None  # the model is loaded already; TRL would warn that they are unused
        try:
            with training.chat_template_faults(recipe, model_args.model_name_or_path):  # TRL renders the data
                sft = training.trainer_class(SFTTrainer)(
                    model=model,
                    args=config,
                    train_dataset=train_dataset,
                    eval_dataset=eval_dataset,
                    processing_class=tokenizer,
                    peft_config=peft_config,
                )
        except ValueError as exc:
            raise UserError(f"TRL's SFTTrainer refused the recipe: {first_line(exc)}") from exc
        if peft_config is not None and peft_config.trainable_token_indices:
            _expose_head_bias(sft.model)
        sft.train(resume_from_checkpoint=str(resume_from) if resume_from else config.resume_from_checkpoint)
        training.save_model(sft, final)
        if sft.accelerator.is_main_process:
            _save(sft, recipe, config, model_args, fit, final)
            publish(final, destination)
        sft.accelerator.wait_for_everyone()
    if sft.accelerator.is_main_process:
        training.report(
            sft,
            destination,
            time.monotonic() - started,
            verb="fine-tuned",
            metrics=[("mean_token_accuracy", "token accuracy")],
            from_first=True,
        )


def _expose_head_bias(model: Any) -> None:
    """Let TRL's fused LM head read `.bias` through PEFT's trainable-token wrapper.

    TRL 1.16 scores tokens from `lm_head.weight` and `lm_head.bias` directly. When a LoRA run trains the rows of
    new tokens, PEFT wraps the head: the wrapper's `.weight` is the head merged with the trained rows, but it has
    no `.bias`, so the wrapped head's own bias is handed to it.
    """
    head = model.get_output_embeddings()
    try:
        head.bias  # noqa: B018 - probing whether the wrapper answers
    except AttributeError:
        original = getattr(head, "original_module", None)
        if original is not None:
            head.bias = original.bias


def _save(sft: Any, recipe: Any, config: Any, model_args: Any, fit: Any, folder: Path) -> None:
    from discopop_cli.core.model_card import render_card
    from discopop_cli.train import shared as training
    from discopop_cli.train.summary import card_hyperparameters

    notes = [fit.summary()] if fit.summary() else []
    if model_args.use_peft and fit.added:
        notes.append(
            f"The adapter expects the base model's embeddings resized to {fit.rows_after} rows "
            f"(`model.resize_token_embeddings({fit.rows_after})`) before `PeftModel.from_pretrained`."
        )
    card = render_card(
        model_name=Path(recipe.training["output_dir"]).name,
        base_model=str(model_args.model_name_or_path),
        datasets=[spec.id for spec in recipe.data.train],
        method="supervised fine-tuning (SFT)",
        losses=[],
        hyperparameters=card_hyperparameters(config, sft.accelerator.num_processes),
        log_history=sft.state.log_history,
        is_gemma=training.is_gemma(sft.model),
        peft=bool(model_args.use_peft),
        task_tag="sft",
        result_columns=SFT_RESULT_COLUMNS,
        notes=notes,
    )
    training.write_outputs(sft, recipe, folder, card)
