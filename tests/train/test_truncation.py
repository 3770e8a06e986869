"""Pairs cut as TRL 0.8.6 cut them, checked against a separate transcription of 0.8.6's `tokenize_row` on pairs of
every length class, and through the trainer's own dataset preparation."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from discopop_cli.train.truncation import cut_pair

BOS = 1


def tokenize_row_086(prompt, chosen, rejected, max_length, max_prompt_length, bos):  # noqa: ANN001, ANN201
    """TRL v0.8.6 `DPOTrainer.tokenize_row` (truncation_mode "keep_end"), step by step on its dicts, for sequences
    that already carry their BOS and EOS; then the one difference this project makes on purpose: a prompt that
    was cut keeps its BOS as its first token instead of losing it."""
    chosen_tokens = {"prompt_input_ids": list(prompt), "input_ids": list(chosen)}
    rejected_tokens = {"prompt_input_ids": list(prompt), "input_ids": list(rejected)}
    prompt_tokens = {"prompt_input_ids": list(prompt)}
    longer_response_length = max(len(chosen_tokens["input_ids"]), len(rejected_tokens["input_ids"]))
    for answer_tokens in [chosen_tokens, rejected_tokens, prompt_tokens]:
        if len(answer_tokens["prompt_input_ids"]) + longer_response_length > max_length:
            answer_tokens["prompt_input_ids"] = answer_tokens["prompt_input_ids"][-max_prompt_length:]
    for answer_tokens in [chosen_tokens, rejected_tokens]:
        if len(answer_tokens["prompt_input_ids"]) + longer_response_length > max_length:
            answer_tokens["input_ids"] = answer_tokens["input_ids"][: max_length - max_prompt_length]
    kept = chosen_tokens["prompt_input_ids"]
    if bos is not None and len(kept) < len(prompt) and prompt[0] == bos:
        kept = [bos, *kept[1:]]
    return kept, chosen_tokens["input_ids"], rejected_tokens["input_ids"]


MAX_LENGTH, MAX_PROMPT = 32, 16
ANSWER_LIMIT = MAX_LENGTH - MAX_PROMPT
PROMPT_LENGTHS = [1, 2, MAX_PROMPT - 1, MAX_PROMPT, MAX_PROMPT + 1, MAX_LENGTH - 1, MAX_LENGTH, MAX_LENGTH + 7]
ANSWER_LENGTHS = [1, ANSWER_LIMIT - 1, ANSWER_LIMIT, ANSWER_LIMIT + 1, MAX_LENGTH - 2, MAX_LENGTH + 3]


def sequence(length: int, start: int, bos: int | None) -> list[int]:
    body = list(range(start, start + length))
    return [bos, *body[1:]] if bos is not None and body else body


@pytest.mark.parametrize("bos", [BOS, None])
def test_every_length_class_is_cut_as_trl_086_cut_it(bos: int | None) -> None:
    classes = set()
    for p, c, r in itertools.product(PROMPT_LENGTHS, ANSWER_LENGTHS, ANSWER_LENGTHS):
        prompt, chosen, rejected = sequence(p, 100, bos), sequence(c, 1000, None), sequence(r, 5000, None)
        cut = cut_pair(prompt, chosen, rejected, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT, bos=bos)
        expected = tokenize_row_086(prompt, chosen, rejected, MAX_LENGTH, MAX_PROMPT, bos)
        assert (cut.prompt, cut.chosen, cut.rejected) == expected, (p, c, r)
        assert len(cut.prompt) + max(len(cut.chosen), len(cut.rejected)) <= MAX_LENGTH
        classes.add((cut.prompt_cut, cut.answers_cut))
        if bos is not None and p > 0:
            assert cut.prompt[0] == BOS  # one BOS, first, cut or not
    # Fits as it is; prompt cut only; answers cut only; both cut.
    assert classes == {(False, False), (True, False), (False, True), (True, True)}


def test_the_published_example() -> None:
    """A 200-token prompt with a 900-token answer (max_length 1024, max_prompt_length 512): the answer keeps 512
    tokens as published, not the 824 that would fit."""
    cut = cut_pair(list(range(200)), list(range(900)), list(range(50)), max_length=1024, max_prompt_length=512)
    assert (len(cut.prompt), len(cut.chosen), len(cut.rejected)) == (200, 512, 50)
    assert cut.answers_cut and not cut.prompt_cut


def test_the_trainer_cuts_pairs_by_the_same_rule(tiny_model_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig

    from discopop_cli.train.discopop_trainer import DiscoPOPTrainer
    from discopop_cli.train.injection import plan_losses

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_text = " ".join(f"word{i}" for i in range(200))

    def pair(question: str, good: str, bad: str) -> dict:
        user = {"role": "user", "content": question}
        return {
            "chosen": [user, {"role": "assistant", "content": good}],
            "rejected": [user, {"role": "assistant", "content": bad}],
        }

    rows = [pair(long_text + " final question?", "yes", "no"), pair("short?", long_text, "no")]
    config = DPOConfig(output_dir=str(tmp_path), max_length=64, use_cpu=True, bf16=False, report_to="none")
    trainer = DiscoPOPTrainer(
        model=str(tiny_model_dir),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        loss_plan=plan_losses("discopop", None, {}, None),
        max_prompt_length=32,
    )
    assert (trainer.prompts_truncated, trainer.answers_truncated) == (1, 1)
    long_prompt, long_answer = trainer.train_dataset[0], trainer.train_dataset[1]
    assert len(long_prompt["prompt_ids"]) == 32 and long_prompt["prompt_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.decode(long_prompt["prompt_ids"]).rstrip().endswith("assistant")
    assert len(long_answer["chosen_ids"]) == 64 - 32  # max_length - max_prompt_length, as published
    assert long_answer["rejected_ids"][-1] == tokenizer.eos_token_id  # short: whole, with its one EOS
    assert tokenizer.eos_token_id not in long_answer["chosen_ids"]  # cut: loses its EOS, as it did then
