"""Preference pairs cut to `max_length` as TRL 0.8.6 cut them: the rule the 2024 recipes, and the published
DiscoPOP-zephyr-7b-gemma run, trained with. A recipe chooses it by setting `max_prompt_length`.

TRL 0.8.6 (`DPOTrainer.tokenize_row`, truncation_mode "keep_end"), with `longer` the longer of the two answers:

1. if prompt + longer > max_length, the prompt keeps its last `max_prompt_length` tokens;
2. if prompt + longer is still > max_length, each answer keeps its first `max_length - max_prompt_length` tokens
   (an answer cut there loses its EOS, as it did then).

A 200-token prompt with a 900-token answer (max_length 1024, max_prompt_length 512) therefore trains on 512 answer
tokens, not on the 824 that would fit. What is not copied: 0.8.6 put its own BOS before a chat template that wrote
one already, and its own EOS after the template's, so Gemma sequences carried two of each; here every sequence
has the one BOS and one EOS of its template, and a cut prompt keeps its BOS as its first token.

Pure Python on token-id lists: `align` maps it over the tokenized dataset, `eval prefs` over its pairs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CutPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    prompt_cut: bool
    answers_cut: bool


def keep_end(prompt: list[int], limit: int, bos: int | None) -> list[int]:
    """The last `limit` tokens of a prompt; a leading BOS stays first (one of the `limit`)."""
    if len(prompt) <= limit:
        return list(prompt)
    if bos is not None and prompt and prompt[0] == bos:
        return [bos, *prompt[len(prompt) - (limit - 1) :]] if limit > 1 else [bos]
    return list(prompt[-limit:])


def cut_pair(
    prompt: list[int],
    chosen: list[int],
    rejected: list[int],
    *,
    max_length: int,
    max_prompt_length: int,
    bos: int | None = None,
) -> CutPair:
    """One pair cut by TRL 0.8.6's rule (module docstring); lists are copied, never changed in place."""
    longer = max(len(chosen), len(rejected))
    new_prompt = list(prompt)
    if len(new_prompt) + longer > max_length:
        new_prompt = keep_end(new_prompt, max_prompt_length, bos)
    answers_cut = len(new_prompt) + longer > max_length
    answer_limit = max_length - max_prompt_length
    new_chosen = list(chosen[:answer_limit]) if answers_cut else list(chosen)
    new_rejected = list(rejected[:answer_limit]) if answers_cut else list(rejected)
    return CutPair(new_prompt, new_chosen, new_rejected, len(new_prompt) < len(prompt), answers_cut)


def cut_example(example: dict, *, max_length: int, max_prompt_length: int, bos: int | None) -> dict:
    """`cut_pair` on a tokenized example (`prompt_ids`, `chosen_ids`, `rejected_ids`); flags say what was cut."""
    cut = cut_pair(
        example["prompt_ids"],
        example["chosen_ids"],
        example["rejected_ids"],
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        bos=bos,
    )
    return {
        "prompt_ids": cut.prompt,
        "chosen_ids": cut.chosen,
        "rejected_ids": cut.rejected,
        "prompt_cut": cut.prompt_cut,
        "answers_cut": cut.answers_cut,
    }
