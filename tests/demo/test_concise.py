"""The preference set of `make demo-real`: generated, shipped as generated, and carrying the preference it claims."""

from __future__ import annotations

import json

from discopop_cli.demo.concise import SHIPPED, pairs, to_jsonl


def test_the_shipped_file_is_what_the_generator_writes() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == to_jsonl(pairs())


def test_each_pair_prefers_the_concise_answer_to_a_repetitive_one_with_the_same_fact() -> None:
    rows = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 300
    questions = [row["chosen"][0]["content"] for row in rows]
    assert len(set(questions)) == len(rows)  # a held-out question is never a training one
    for row in rows:
        assert row["chosen"][0] == row["rejected"][0]
        concise, rambling = row["chosen"][1]["content"], row["rejected"][1]["content"]
        assert rambling == " ".join([concise] * 6)
