"""HumanEval decontamination as the 2024 handbook scripts did it, on a small HumanEval-shaped set written here
(prompt with a docstring, canonical_solution), and its one-line refusal when the real set cannot be loaded."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.data.decontaminate import decontaminate, docstring, filter_strings

runner = CliRunner()

PROBLEMS = [
    {
        "task_id": "Fixture/0",
        "prompt": 'def shout(text: str) -> str:\n    """Return the text in capitals, then an exclamation mark.\n'
        "    >>> shout('hi')\n    'HI!'\n    \"\"\"\n",
        "canonical_solution": "    return text.upper() + '!'\n",
    },
    {  # a helper's docstring first: the problem's own is the second
        "task_id": "Fixture/1",
        "prompt": 'def helper():\n    """Not this one."""\n\n\ndef total(xs):\n    """Sum the numbers in xs, '
        'ignoring the negative ones."""\n',
        "canonical_solution": "    return x + y\n",  # one of the generic solutions the handbook kept
    },
    {
        "task_id": "Fixture/2",
        "prompt": "def glue(strings):\n    '''Join the strings with nothing between them.'''\n",
        # The handbook meant to keep it, but wrote "return " ".join(strings)": Python's "return .join(strings)".
        "canonical_solution": "    return ''.join(strings)\n",
    },
]


def pair(answer: str, rejected: str = "no idea") -> dict:
    user = {"role": "user", "content": "Help me with some code."}
    return {
        "chosen": [user, {"role": "assistant", "content": answer}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
    }


ROWS = [
    # The whole docstring, doctest included, in other case and spacing:
    pair("Here:\n  RETURN the text in capitals,\nthen an   exclamation mark. >>> shout('hi')\n'HI!'"),
    pair("def glue(strings):\n    return ''.join(strings)"),  # a solution
    pair("sum the numbers in xs, ignoring the negative ones."),  # the second docstring of a two-function prompt
    pair("use return x + y for that"),  # a kept generic solution
    pair("fine", rejected="Return the text in capitals, then an exclamation mark."),  # only the chosen answer counts
    pair("Not this one."),  # a helper's docstring is not the problem's
] + [pair(f"clean answer {i}") for i in range(10)]


def test_docstrings_and_solutions_are_what_the_handbook_filtered() -> None:
    assert docstring(PROBLEMS[1]["prompt"]) == "Sum the numbers in xs, ignoring the negative ones."
    strings = filter_strings(PROBLEMS)
    assert "return x + y" not in strings and "return ''.join(strings)" in strings
    assert len(strings) == 5  # three docstrings, two solutions


def test_align_keeps_only_clean_chosen_answers_and_sft_reads_the_whole_conversation() -> None:
    from datasets import Dataset

    strings = filter_strings(PROBLEMS)
    kept, removed = decontaminate(Dataset.from_list(ROWS), strings, "align")
    assert removed == 3
    assert [row["chosen"][-1]["content"] for row in kept][:3] == ["use return x + y for that", "fine", "Not this one."]

    conversations = Dataset.from_list(
        [
            {"messages": [{"role": "user", "content": "glue: join the strings with nothing between them."}]},
            {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
        ]
    )
    kept, removed = decontaminate(conversations, strings, "sft")
    assert removed == 1 and kept[0]["messages"][0]["content"] == "hello"


def test_align_run_filters_and_counts_and_refuses_without_the_set(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "humaneval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    body = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset_mixture": {"datasets": ["pairs.jsonl"], "test_split_size": 4, "seed": 1},
        "decontaminate_humaneval": "humaneval.jsonl",
        "loss_type": "discopop",
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "max_length": 64,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": "out",
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(body))
    result = runner.invoke(app, ["align", "recipe.yaml"])
    assert result.exit_code == 0, result.output
    assert "training row(s) quote HumanEval (humaneval.jsonl) and were removed" in result.output

    # The real set, offline and not cached: one line, nothing written.
    result = runner.invoke(app, ["align", "recipe.yaml", "--set", "decontaminate_humaneval=true", "-o", "second"])
    assert result.exit_code == 2
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: decontaminate_humaneval: the HumanEval problems (openai_humaneval) could not")
    assert "--set decontaminate_humaneval=false" in message
    assert not (tmp_path / "second").exists()
