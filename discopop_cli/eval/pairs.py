"""The pairs `eval prefs` scores: where they come from, and how they become token ids.

Data comes through the loaders `align` uses (data/sources.py): `--data` names a local file, a local dataset folder
or a Hub id (repeat it to score several datasets together, concatenated in order); `--recipe` takes the held-out
split `align` carved or named (`test_split_size`, `eval_datasets`, `dataset_test_split`), rows in the same order.

Tokenization is TRL's own (`DPOTrainer._prepare_dataset` in TRL 1.16): the implicit prompt extracted, EOS added to
plain-text completions, the chat template applied, the completion starting where the tokenized prompt and
prompt+completion diverge, and pairs whose prompt alone fills `max_length` dropped. The numbers can then equal
`DPOTrainer.evaluate()` on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.data.checks import check_local_spec
from discopop_cli.data.sources import DatasetSpec, DataSpec
from discopop_cli.train.truncation import cut_example

PAIR_COLUMNS = ["chosen", "rejected"]


@dataclass
class PairData:
    """What to score, checked before any model loads: the datasets, and the recipe's settings when one is given."""

    spec: DataSpec
    from_recipe: bool
    label: str
    split: str
    recipe: Any = None
    beta: float | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    chat_template: str | None = None
    tokenizer: str | None = None
    reference: str | None = None
    insert_system: bool = False
    notes: list[str] = field(default_factory=list)


def _spec_for(value: str, split: str | None) -> DatasetSpec:
    from discopop_cli.data.checks import looks_like_file

    path = Path(value).expanduser()
    if not path.exists() and looks_like_file(value):
        raise UserError(f"--data {value} not found; give a local file or folder of pairs, or a Hub dataset id")
    if path.is_file():
        return DatasetSpec(value, split=split or "train", columns=None)
    return DatasetSpec(value, split=split or "test")


def plan_data(data: list[str], split: str | None, recipe_path: Path | None) -> PairData:
    """The pairs named by `--data`/`--split` or `--recipe`, checked (files exist, have rows and pair columns)."""
    if recipe_path is None and not data:
        raise UserError("no pairs to score; pass --data FILE_OR_HUB_ID, or --recipe RECIPE for its held-out split")
    recipe = None
    if recipe_path is not None:
        from discopop_cli.recipes.load import load_recipe

        # The recipe's own data checks look at its training files; the held-out split is checked below.
        recipe = load_recipe(recipe_path, "align", quiet=True)
    if data:
        spec = DataSpec(train=[_spec_for(value, split) for value in data])
        label = " + ".join(s.id for s in spec.train)
        split_name = "+".join(sorted({s.split for s in spec.train}))
    else:
        spec = recipe.data
        if not spec.has_eval:
            raise UserError(
                f"{recipe_path.name} has no held-out split (no test_split_size, eval_datasets or test split); "
                "add one to the recipe, or pass --data with the pairs to score"
            )
        label = " + ".join(s.id for s in [*spec.train, *spec.eval]) if spec.eval else spec.train[0].id
        split_name = "held-out" if spec.test_split_size else "+".join(sorted({s.split for s in spec.eval}))
    for dataset in spec.eval if (recipe is not None and not data and spec.eval) else spec.train:
        check_local_spec(dataset, "align")
    plan = PairData(spec=spec, from_recipe=not data, label=label, split=split_name, recipe=recipe)
    if recipe is not None:
        _take_recipe_settings(plan, recipe)
    return plan


def _take_recipe_settings(plan: PairData, recipe: Any) -> None:
    training, extras = recipe.training, recipe.extras
    plan.beta = training.get("beta")
    plan.max_length = training.get("max_length", 1024)
    plan.max_prompt_length = extras.get("max_prompt_length")
    plan.chat_template = extras.get("chat_template")
    plan.tokenizer = extras.get("tokenizer_name_or_path")
    plan.reference = str(recipe.model["model_name_or_path"])
    plan.insert_system = bool(extras.get("auto_insert_empty_system_msg"))


def load_rows(plan: PairData) -> Any:
    """The pairs as one `datasets.Dataset`, in order: `--data` datasets concatenated, or the recipe's eval split."""
    from datasets import concatenate_datasets

    from discopop_cli.data import sources

    if plan.from_recipe:
        _, rows = sources.load_datasets(plan.spec, with_eval=True)
    else:
        parts = [sources.load_split(spec) for spec in plan.spec.train]
        rows = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if rows is None or len(rows) == 0:
        raise UserError(f"no pairs in {plan.label} [{plan.split}]; point --data or the recipe at preference pairs")
    sources.require_columns(rows, set(PAIR_COLUMNS), "eval prefs")
    keep = [c for c in ("prompt", "chosen", "rejected", "tools", "chat_template_kwargs") if c in rows.column_names]
    return rows.select_columns(keep)


def tokenize_pairs(rows: Any, tokenizer: Any, *, max_length: int | None, max_prompt_length: int | None) -> list[dict]:
    """prompt_ids / chosen_ids / rejected_ids per pair, exactly as TRL 1.16's DPOTrainer prepares them."""
    import json

    from trl.data_utils import _tokenize, common_prefix_length, extract_prompt, is_conversational

    examples = []
    for example in rows:
        if "prompt" not in example or example["prompt"] is None:
            example = {**example, **extract_prompt(example)}
        conversational = is_conversational(example)
        if not conversational and tokenizer.eos_token:
            for key in ("chosen", "rejected"):
                if not example[key].endswith(tokenizer.eos_token):
                    example[key] = example[key] + tokenizer.eos_token
        if conversational and not tokenizer.chat_template:
            raise UserError(
                "the pairs are conversations but the tokenizer has no chat template; score a model that has one, "
                "or give a recipe whose chat_template to use (--recipe)"
            )
        tools = example.get("tools")
        kwargs = {"tools": json.loads(tools) if isinstance(tools, str) else tools}
        kwargs.update(example.get("chat_template_kwargs") or {})
        if conversational:
            prompt = _tokenize(tokenizer, example["prompt"], add_generation_prompt=True, **kwargs)["input_ids"]
            chosen = _tokenize(tokenizer, example["prompt"] + example["chosen"], **kwargs)["input_ids"]
            rejected = _tokenize(tokenizer, example["prompt"] + example["rejected"], **kwargs)["input_ids"]
        else:
            prompt = _tokenize(tokenizer, example["prompt"])["input_ids"]
            chosen = _tokenize(tokenizer, example["prompt"] + example["chosen"])["input_ids"]
            rejected = _tokenize(tokenizer, example["prompt"] + example["rejected"])["input_ids"]
        cut = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
        examples.append({"prompt_ids": prompt[:cut], "chosen_ids": chosen[cut:], "rejected_ids": rejected[cut:]})
    if max_prompt_length is not None and max_length is not None:
        # The recipe's `max_prompt_length`: pairs cut as `discopop align` cuts them (TRL 0.8.6's rule).
        bos = tokenizer.bos_token_id
        cut_pairs = [
            cut_example(e, max_length=max_length, max_prompt_length=max_prompt_length, bos=bos) for e in examples
        ]
        examples = [{key: e[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")} for e in cut_pairs]
    if max_length is not None:
        # TRL drops pairs whose prompt alone fills max_length: nothing of the completion would be scored.
        examples = [e for e in examples if len(e["prompt_ids"]) < max_length]
    if not examples:
        raise UserError(f"every pair's prompt is at least max_length ({max_length}) tokens; raise --max-length")
    return examples
