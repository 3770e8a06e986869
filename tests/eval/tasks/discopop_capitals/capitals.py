"""The rows of the discopop_capitals task, read from the JSONL file beside this one (no network)."""

from pathlib import Path


def load(**kwargs):
    from datasets import Dataset, DatasetDict

    rows = Path(__file__).with_name("capitals.jsonl")
    return DatasetDict({"test": Dataset.from_json(str(rows))})
