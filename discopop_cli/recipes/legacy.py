"""Keys of 2024 alignment-handbook recipes (transformers 4.x, TRL < 0.20), translated to TRL 1.16's.

Each translation returns the new key/value pairs to merge and says what it did; nothing is dropped without a
line saying so, and what cannot be translated is refused with the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.suggest import suggest

Translation = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], str]]


def _rename(new: str) -> Translation:
    return lambda value, _raw: ({new: value}, f"renamed to '{new}'")


def _flash_attention(value: Any, _raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if value:
        return {"attn_implementation": "flash_attention_2"}, "now 'attn_implementation: flash_attention_2'"
    return {}, "false is the default now (transformers picks sdpa/eager); removed"


def _warmup_ratio(value: Any, _raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    # transformers 5 reads warmup_steps below 1 as a ratio and from 1 up as steps: a ratio of 1 or more cannot be
    # carried over, and passed on it would silently mean that many steps.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(
            f"'warmup_ratio' is a fraction of the training steps below 1 (e.g. 0.1), got {value!r}; "
            "for a number of steps, set warmup_steps instead"
        )
    return {"warmup_steps": value}, f"now 'warmup_steps: {value}' (a value below 1 is a ratio in transformers 5)"


def _rpo_alpha(value: Any, raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if value is None:
        return {}, "null; removed"
    losses = raw.get("loss_type", "sigmoid")
    losses = [losses] if isinstance(losses, str) else list(losses)
    weights = list(raw.get("loss_weights") or [1.0] * len(losses))
    return (
        {"loss_type": [*losses, "sft"], "loss_weights": [*weights, float(value)]},
        f"now an added 'sft' loss with weight {value} (TRL's loss_type list)",
    )


# The handbook's SFT `dataset_kwargs` were TRL < 0.20 tokenization switches; TRL 1.16 knows one key.
_DATASET_KWARGS_KEPT = {"skip_prepare_dataset"}
_DATASET_KWARGS_RETIRED = {
    "add_special_tokens": "TRL 1.16 adds no special tokens to chat-templated text, so the template's bos/eos "
    "are the only ones",
    "append_concat_token": "TRL 1.16 packs sequences as they are, with no token added between them",
}


def _dataset_kwargs(value: Any, _raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if not isinstance(value, dict):
        raise UserError(f"'dataset_kwargs' must be a mapping, e.g. {{skip_prepare_dataset: true}}; got {value!r}")
    kept: dict[str, Any] = {}
    retired: list[str] = []
    for key, item in value.items():
        if key in _DATASET_KWARGS_KEPT:
            kept[key] = item
        elif key in _DATASET_KWARGS_RETIRED:
            retired.append(f"{key} removed ({_DATASET_KWARGS_RETIRED[key]})")
        else:
            known = _DATASET_KWARGS_KEPT | set(_DATASET_KWARGS_RETIRED)
            raise UserError(
                f"'dataset_kwargs.{key}' is unknown{suggest(key, known)}; TRL 1.16 reads only skip_prepare_dataset"
            )
    if not retired:
        return {"dataset_kwargs": kept}, ""  # nothing legacy in it: no notice
    return ({"dataset_kwargs": kept} if kept else {}), "; ".join(retired)


def _dropped(reason: str) -> Translation:
    return lambda _value, _raw: ({}, reason)


def _refused(reason: str) -> Translation:
    def refuse(_value: Any, _raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
        raise UserError(reason)

    return refuse


LEGACY_KEYS: dict[str, Translation] = {
    "evaluation_strategy": _rename("eval_strategy"),
    "torch_dtype": _rename("dtype"),
    "use_flash_attention_2": _flash_attention,
    "preprocessing_num_workers": _rename("dataset_num_proc"),
    "max_seq_length": _rename("max_length"),
    "warmup_ratio": _warmup_ratio,
    "hub_model_revision": _rename("hub_revision"),
    "gradient_checkpointing": _rename("activation_checkpointing"),
    "gradient_checkpointing_kwargs": _rename("activation_checkpointing_kwargs"),
    "per_gpu_train_batch_size": _rename("per_device_train_batch_size"),
    "per_gpu_eval_batch_size": _rename("per_device_eval_batch_size"),
    "no_cuda": _rename("use_cpu"),
    "rpo_alpha": _rpo_alpha,
    "overwrite_output_dir": _dropped("removed; pass --force to replace an existing output directory"),
    "max_completion_length": _dropped(
        "removed; with max_prompt_length, answers are cut to max_length - max_prompt_length (TRL 0.8.6's rule), "
        "else prompt+completion at max_length"
    ),
    "max_target_length": _dropped("removed; TRL now truncates prompt+completion together at max_length"),
    "generate_during_eval": _dropped("removed; TRL 1.x no longer samples completions during evaluation"),
    "is_encoder_decoder": _dropped("removed; TRL reads it from the model config"),
    "padding_value": _dropped("removed; the tokenizer's pad token is used"),
    "label_pad_token_id": _dropped("removed; TRL masks padding with the completion mask"),
    "ref_model_init_kwargs": _dropped("removed; the reference model is loaded with model_init_kwargs"),
    # 2024 SFT recipes (TRL < 0.20 SFTConfig, handbook DataArguments/ModelArguments).
    "dataset_kwargs": _dataset_kwargs,
    "text_column": _rename("dataset_text_field"),
    "use_liger": _rename("use_liger_kernel"),
    "dataset_batch_size": _dropped("removed; TRL 1.16 tokenizes example by example"),
    "num_of_sequences": _dropped("removed with TRL's ConstantLengthDataset; packing fills blocks of max_length"),
    "chars_per_token": _dropped("removed with TRL's ConstantLengthDataset; packing fills blocks of max_length"),
    "truncation_side": _dropped("removed; TRL truncates at max_length keeping the start of each sequence"),
    "model_code_revision": _dropped("removed; model_revision pins code and weights together"),
    "reference_free": _refused(
        "'reference_free' is not supported by TRL 1.16's DPOTrainer: remove it from the recipe "
        "(or write a reference-free loss and set loss_type: module:function)"
    ),
}

# Nested in the pre-2025 `dataset_mixer` form; translated by `_translate_mixer`.
LEGACY_DATA_KEYS = {"dataset_mixer", "dataset_splits", "dataset_configs"}


# What the 2024 handbook scripts did without a recipe key, applied to recipes in the 2024 form (`dataset_mixer`).
PUBLISHED_SEED = 42  # alignment-handbook src/alignment/data.py (March 2024): mix_datasets shuffles with seed=42
PUBLISHED_PACKING = "wrapped"  # run_sft.py passed packing=True: TRL 0.8.6's ConstantLengthDataset cut blocks


def translate_legacy(
    raw: dict[str, Any], source: str, task: str | None = None, overridden: set[str] | frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[str]]:
    """The recipe with its 2024 keys translated, and one line per translation saying what was done.

    A recipe in the 2024 form (`dataset_mixer`) also gets what the 2024 scripts did unasked: the empty system turn
    (`auto_insert_empty_system_msg` defaulted to true), the shuffle seed 42, and for `sft` packing (`run_sft.py`
    hard-coded `packing=True`), each unless the recipe sets it. A new key given with `--set` (`overridden`) replaces
    its legacy spelling instead of clashing with it.
    """
    messages: list[str] = []
    form_2024 = "dataset_mixer" in raw
    out: dict[str, Any] = {}
    for key, value in raw.items():
        translate = LEGACY_KEYS.get(key)
        if translate is None:
            out.setdefault(key, value)
            continue
        new, what = translate(value, raw)
        given = [k for k in new if k != key and k in raw and k not in ("loss_type", "loss_weights")]
        if given and all(k in overridden for k in given):
            # `--set eval_strategy=no` on a recipe that says `evaluation_strategy: steps`: the command line wins.
            messages.append(f"{source}: '{key}' left out: --set {given[0]} replaces it")
            continue
        for new_key in given:
            raise UserError(f"{source}: both '{key}' (legacy) and '{new_key}' are set; keep only '{new_key}'")
        out.update(new)
        if what:
            messages.append(f"{source}: '{key}' {what}")
    out = _translate_mixer(out, source, messages)
    if form_2024:
        _published_defaults(out, source, task, messages)
    return out, messages


def _published_defaults(raw: dict[str, Any], source: str, task: str | None, messages: list[str]) -> None:
    if "auto_insert_empty_system_msg" not in raw:
        raw["auto_insert_empty_system_msg"] = True
        messages.append(
            f"{source}: 'auto_insert_empty_system_msg' not set: true, the 2024 handbook's default (an empty system "
            "turn where the chat template knows one)"
        )
    if task == "sft" and "packing" not in raw:
        raw["packing"] = True
        raw.setdefault("packing_strategy", PUBLISHED_PACKING)
        messages.append(
            f"{source}: 'packing' not set: true with packing_strategy '{raw['packing_strategy']}', as the 2024 "
            "run_sft.py packed conversations into blocks of max_length"
        )


def _translate_mixer(raw: dict[str, Any], source: str, messages: list[str]) -> dict[str, Any]:
    """The 2024 `dataset_mixer: {id: fraction}` + `dataset_splits` form, as a `dataset_mixture`."""
    if not LEGACY_DATA_KEYS & raw.keys():
        return raw
    if "dataset_mixer" not in raw:
        stray = sorted(LEGACY_DATA_KEYS & raw.keys())
        raise UserError(f"{source}: {', '.join(stray)} only work together with 'dataset_mixer'; add it or remove them")
    if "dataset_mixture" in raw:
        raise UserError(
            f"{source}: set either 'dataset_mixer' (2024 form) or 'dataset_mixture', not both; to use the "
            "dataset_mixture, remove the other: --unset dataset_mixer --unset dataset_splits"
        )
    mixer = raw.pop("dataset_mixer")
    splits = raw.pop("dataset_splits", None) or ["train", "test"]
    configs = raw.pop("dataset_configs", None)
    if not isinstance(mixer, dict) or not mixer:
        raise UserError(
            f"{source}: 'dataset_mixer' must map dataset ids to fractions, e.g. {{argilla/dpo-mix-7k: 1.0}}"
        )
    if isinstance(splits, str):
        splits = [splits]
    if configs is not None and len(configs) != len(mixer):
        raise UserError(f"{source}: 'dataset_configs' needs one entry per dataset in 'dataset_mixer'")
    train, test = [], []
    for index, (dataset_id, fraction) in enumerate(mixer.items()):
        config = configs[index] if configs else None
        for split in splits:
            entry = {"id": dataset_id, "config": config, "split": split}
            if "train" in split:
                # The 2024 handbook subsampled training splits only; test splits were always used whole.
                train.append({**entry, "weight": fraction})
            elif "test" in split:
                test.append(entry)
            else:
                raise UserError(f"{source}: split '{split}' in 'dataset_splits' is neither a train nor a test split")
    mixture: dict[str, Any] = {"datasets": train, "seed": PUBLISHED_SEED}
    if test:
        mixture["eval_datasets"] = test
    raw["dataset_mixture"] = mixture
    messages.append(
        f"{source}: 'dataset_mixer' + 'dataset_splits' (2024 form) read as a dataset_mixture of "
        f"{len(train)} train and {len(test)} eval split(s), shuffled with seed {PUBLISHED_SEED} as the handbook did"
    )
    return raw
