"""The data of `make demo-real` on Gemma: generated, shipped as generated, multi-line answers that end."""

from __future__ import annotations

import json

from discopop_cli.demo.lists import CHAT_FILE, PREFERENCES_FILE, SHIPPED, _jsonl, conversations


def test_the_shipped_files_are_what_the_generator_writes() -> None:
    chats, pairs = conversations()
    assert (SHIPPED / CHAT_FILE).read_text(encoding="utf-8") == _jsonl(chats)
    assert (SHIPPED / PREFERENCES_FILE).read_text(encoding="utf-8") == _jsonl(pairs)


def test_pairs_prefer_the_list_that_ends_to_the_one_that_runs_on() -> None:
    rows = [json.loads(line) for line in (SHIPPED / PREFERENCES_FILE).read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 192
    questions = [row["chosen"][-2]["content"] for row in rows]
    assert len(set(questions)) == len(rows)  # a held-out question is never a training one
    for row in rows:
        assert row["chosen"][:-1] == row["rejected"][:-1]
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        lines = chosen.splitlines()
        assert 3 <= len(lines) <= 5 and lines[0].startswith("Here are ")  # a header and 2 to 4 items
        assert rejected.startswith(chosen + "\n") and len(rejected.splitlines()) == 3 * len(lines) - 2
