"""Datasets: Hub ids, local directories and data files, and weighted mixtures.

A dataset `id` in a recipe is a local data file (.json, .jsonl, .parquet, .csv), a local directory (a
`save_to_disk` dataset or a folder of data files), or a Hub id. Local ones never touch the network.
Mixtures follow the alignment-handbook: each dataset is optionally subsampled by `weight`, the parts are
concatenated and shuffled with the mixture's `seed`, and `test_split_size` carves an eval split.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.suggest import suggest

DATA_KEYS = {"dataset_mixture", "dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split"}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_ENTRY_KEYS = {"id", "config", "split", "columns", "weight"}
_ENTRY_ALIASES = {"path": "id", "name": "config"}  # TRL's DatasetMixtureConfig spelling
_MIXTURE_KEYS = {"datasets", "seed", "test_split_size", "eval_datasets"}


@dataclass
class DatasetSpec:
    id: str
    config: str | None = None
    split: str = "train"
    columns: list[str] | None = None
    weight: float | None = None
    # Rows (0-based) of a local file that --skip-bad-rows leaves out; set by checks.check_rows, never written out.
    drop_rows: tuple[int, ...] = field(default=(), repr=False)
    # Read from a 2024 `dataset_mixer`, which reads every split of `dataset_splits` from the same dataset.
    from_mixer: bool = field(default=False, repr=False)

    @property
    def local_path(self) -> Path | None:
        path = Path(self.id).expanduser()
        return path if path.exists() else None

    def one_split_error(self, path: Path) -> UserError:
        """A data file has one split, 'train': how to get eval data instead, in the recipe's own form."""
        problem = f"dataset file {path} has one split, 'train' (asked for '{self.split}')"
        if self.from_mixer:
            return UserError(
                f"{problem}; a 2024 dataset_mixer reads every split of dataset_splits from the same dataset, so "
                f"replace it: --unset dataset_mixer --unset dataset_splits --set 'dataset_mixture={{datasets: "
                f"[{self.id}], test_split_size: 0.05}}' (or train without eval: --set dataset_splits=[train] "
                "--set eval_strategy=no)"
            )
        return UserError(
            f"{problem}; carve an eval split with dataset_mixture.test_split_size, or give the eval data its own file"
        )

    @property
    def label(self) -> str:
        config = f" ({self.config})" if self.config else ""
        return f"{self.id}{config} [{self.split}]"


@dataclass
class DataSpec:
    train: list[DatasetSpec]
    eval: list[DatasetSpec] = field(default_factory=list)
    seed: int = 0
    test_split_size: float | None = None

    @property
    def has_eval(self) -> bool:
        return bool(self.eval) or bool(self.test_split_size)

    def as_dict(self) -> dict[str, Any]:
        def entry(spec: DatasetSpec) -> dict[str, Any]:
            return {k: v for k, v in asdict(spec).items() if v is not None and k not in ("drop_rows", "from_mixer")}

        out: dict[str, Any] = {"datasets": [entry(s) for s in self.train], "seed": self.seed}
        if self.eval:
            out["eval_datasets"] = [entry(s) for s in self.eval]
        if self.test_split_size:
            out["test_split_size"] = self.test_split_size
        return out


def _parse_entry(entry: Any, source: str, recipe_dir: Path) -> DatasetSpec:
    if isinstance(entry, str):
        entry = {"id": entry}
    if not isinstance(entry, dict):
        raise UserError(f"{source}: each dataset is a mapping with at least 'id', got {entry!r}")
    entry = {_ENTRY_ALIASES.get(k, k): v for k, v in entry.items()}
    for key in entry:
        if key not in _ENTRY_KEYS:
            raise UserError(
                f"{source}: unknown dataset key '{key}'{suggest(key, _ENTRY_KEYS)} (valid: id, config, split, columns, weight)"
            )
    if not entry.get("id"):
        raise UserError(f"{source}: a dataset entry has no 'id'; give a Hub id or a local file/directory")
    weight = entry.get("weight")
    if weight is not None and not (isinstance(weight, int | float) and 0 < weight <= 1):
        raise UserError(f"{source}: weight of '{entry['id']}' must be in (0, 1], got {weight!r}")
    columns = entry.get("columns")
    if isinstance(columns, str):
        columns = [columns]
    return DatasetSpec(
        id=resolve_local(str(entry["id"]), recipe_dir),
        config=entry.get("config"),
        split=str(entry.get("split") or "train"),
        columns=columns,
        weight=float(weight) if weight is not None else None,
    )


def resolve_local(value: str, recipe_dir: Path) -> str:
    """A relative local path works from the current directory or, failing that, from the recipe's."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return value
    beside = recipe_dir / value
    return str(beside.resolve()) if beside.exists() else value


def parse_data_spec(keys: dict[str, Any], recipe_path: Path) -> DataSpec:
    source, recipe_dir = recipe_path.name, recipe_path.parent
    if "dataset_mixture" in keys and "dataset_name" in keys:
        raise UserError(f"{source}: set either 'dataset_mixture' or 'dataset_name', not both")
    if "dataset_mixture" in keys:
        mixture = keys["dataset_mixture"]
        if not isinstance(mixture, dict) or not mixture.get("datasets"):
            raise UserError(f"{source}: 'dataset_mixture' needs a non-empty 'datasets' list")
        for key in mixture:
            if key not in _MIXTURE_KEYS:
                raise UserError(f"{source}: unknown dataset_mixture key '{key}'{suggest(key, _MIXTURE_KEYS)}")
        size = mixture.get("test_split_size")
        if size is not None and not (isinstance(size, int | float) and size > 0):
            raise UserError(f"{source}: test_split_size must be a fraction in (0, 1) or a row count, got {size!r}")
        seed = mixture.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"{source}: dataset_mixture seed must be an integer, got {seed!r}")
        entries = {}
        for key in ("datasets", "eval_datasets"):
            entries[key] = mixture.get(key) or []
            if not isinstance(entries[key], list):
                raise UserError(
                    f"{source}: dataset_mixture '{key}' must be a list of datasets (each an id or a mapping with "
                    f"'id'), got {entries[key]!r}"
                )
        return DataSpec(
            train=[_parse_entry(e, source, recipe_dir) for e in entries["datasets"]],
            eval=[_parse_entry(e, source, recipe_dir) for e in entries["eval_datasets"]],
            seed=seed,
            test_split_size=size,
        )
    if "dataset_name" in keys:
        name, config = keys["dataset_name"], keys.get("dataset_config")
        train_split = keys.get("dataset_train_split", "train")
        test_split = keys.get("dataset_test_split", "test")
        dataset_id = resolve_local(str(name), recipe_dir)
        return DataSpec(
            train=[DatasetSpec(dataset_id, config, train_split)],
            eval=[DatasetSpec(dataset_id, config, test_split)],
        )
    raise UserError(f"{source}: no dataset; add 'dataset_mixture' (or 'dataset_name', or the 2024 'dataset_mixer')")


def count_rows(spec: DatasetSpec) -> int | None:
    """Row count of a local dataset without loading it through `datasets` (no cache written); None if unknown."""
    path = spec.local_path
    if path is None:
        return None
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip())
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                return len(data)
            return None
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        return None
    try:
        dataset = _load_local_dir(path, spec)
    except UserError:
        return None
    return len(dataset)


def split_base(split: str) -> str:
    return split.split("[", 1)[0]


def _load_local_dir(path: Path, spec: DatasetSpec) -> Any:
    from datasets import DatasetDict, load_dataset, load_from_disk

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if spec.split not in loaded:
                raise UserError(f"dataset {spec.id} has no split '{spec.split}'; it has {sorted(loaded)}")
            return loaded[spec.split]
        return loaded
    return load_dataset(str(path), spec.config, split=spec.split)


def _load_file(builder: str, path: Path, spec: DatasetSpec) -> Any:
    """A local data file, less the rows --skip-bad-rows drops. JSON rows are rebuilt from the good ones, since
    a bad row of another type (a number where the others hold lists) would stop pyarrow from reading the file."""
    from datasets import Dataset, load_dataset

    if not spec.drop_rows:
        return load_dataset(builder, data_files=str(path), split=spec.split)
    dropped = set(spec.drop_rows)
    if builder == "json":
        from discopop_cli.data.rows import read_rows

        return Dataset.from_list([row for i, (_, row) in enumerate(read_rows(path)) if i not in dropped])
    dataset = load_dataset(builder, data_files=str(path), split=spec.split)
    return dataset.select([i for i in range(len(dataset)) if i not in dropped])


def load_split(spec: DatasetSpec) -> Any:
    """One split of one dataset as a `datasets.Dataset`."""
    from datasets import load_dataset

    path = spec.local_path
    try:
        if path is not None and path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"dataset file {path} has an unsupported type; use .json, .jsonl, .parquet or .csv")
            if split_base(spec.split) != "train":
                raise spec.one_split_error(path)
            dataset = _load_file(builder, path, spec)
        elif path is not None:
            dataset = _load_local_dir(path, spec)
        else:
            dataset = load_dataset(spec.id, spec.config, split=spec.split)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs the one line
        hint = "" if path is not None else " (a Hub dataset needs the network or a local cache)"
        raise UserError(f"could not load dataset {spec.label}: {first_line(exc)}{hint}") from None
    if spec.columns:
        missing = [c for c in spec.columns if c not in dataset.column_names]
        if missing:
            raise UserError(f"dataset {spec.label} has no column(s) {missing}; it has {dataset.column_names}")
        dataset = dataset.select_columns(spec.columns)
    return dataset


def _mix(specs: list[DatasetSpec], seed: int, *, subsample: bool) -> Any:
    from datasets import concatenate_datasets

    parts = []
    for spec in specs:
        dataset = load_split(spec)
        if subsample and spec.weight is not None and spec.weight < 1:
            dataset = dataset.shuffle(seed=seed).select(range(int(len(dataset) * spec.weight)))
        parts.append(dataset)
    columns = {tuple(sorted(p.column_names)) for p in parts}
    if len(columns) > 1:
        described = "; ".join(f"{s.id}: {sorted(p.column_names)}" for s, p in zip(specs, parts, strict=True))
        raise UserError(
            f"the datasets of the mixture have different columns ({described}); pick common ones with 'columns:'"
        )
    return concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0].shuffle(seed=seed)


def load_datasets(data: DataSpec, *, with_eval: bool) -> tuple[Any, Any | None]:
    """(train, eval) datasets of a recipe; eval is None when evaluation is off."""
    train = _mix(data.train, data.seed, subsample=True)
    if len(train) == 0:
        raise UserError("the training data is empty; check the dataset ids, splits and weights")
    eval_dataset = None
    if with_eval and data.eval:
        eval_dataset = _mix(data.eval, data.seed, subsample=False)
    if data.test_split_size:
        size = data.test_split_size
        if size >= len(train) or (size >= 1 and size != int(size)):
            raise UserError(f"test_split_size {size} leaves no training rows out of {len(train)}")
        split = train.train_test_split(test_size=int(size) if size >= 1 else size, seed=data.seed)
        train = split["train"]
        if with_eval:
            from datasets import concatenate_datasets

            eval_dataset = (
                split["test"] if eval_dataset is None else concatenate_datasets([eval_dataset, split["test"]])
            )
    return train, eval_dataset


def require_columns(dataset: Any, needed: set[str], what: str) -> None:
    missing = needed - set(dataset.column_names)
    if missing:
        raise UserError(
            f"{what} needs columns {sorted(needed)}; the data has {dataset.column_names} "
            f"(missing {sorted(missing)}); select or rename them in the recipe's dataset 'columns'"
        )


def insert_empty_system_message(dataset: Any, chat_template: str | None) -> Any:
    """The handbook's `auto_insert_empty_system_msg`: templates that know a system turn get an empty one.

    zephyr-7b-gemma was aligned this way, so its prompts start with an empty system turn. As in the handbook
    (`maybe_insert_system_message`), a template qualifies when it mentions `system` or is ChatML (`<|im_start|>`).
    """
    if not chat_template or ("system" not in chat_template and "<|im_start|>" not in chat_template):
        return dataset
    columns = [c for c in ("prompt", "chosen", "rejected", "messages") if c in dataset.column_names]

    def insert(example: dict[str, Any]) -> dict[str, Any]:
        # With an explicit prompt only the prompt gets the turn; otherwise the shared conversation prefix does.
        targets = ["prompt"] if "prompt" in columns else columns
        for column in targets:
            messages = example[column]
            if isinstance(messages, list) and messages and messages[0].get("role") != "system":
                example[column] = [{"role": "system", "content": ""}, *messages]
        return example

    if not columns or not isinstance(dataset[0][columns[0]], list):
        return dataset
    return dataset.map(insert, desc="Inserting empty system turns")
