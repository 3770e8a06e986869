"""Recipes: alignment-handbook YAML in, TRL configuration out.

One place owns everything a recipe can say: loading the YAML, `--set` overrides, translating the keys of
2024-era handbook recipes (the table is in legacy.py), refusing unknown keys with a did-you-mean, and routing
each key to TRL's `ModelConfig`, the trainer config (`DPOConfig` / `SFTConfig`) or the data options.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from discopop_cli.core.console import notice, warn
from discopop_cli.core.devices import accelerator_available
from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.suggest import suggest
from discopop_cli.core.yaml_text import YamlRefused, load_yaml_text
from discopop_cli.data.checks import BadRowPolicy, check_local_data
from discopop_cli.data.sources import DATA_KEYS, DataSpec, parse_data_spec, resolve_local
from discopop_cli.recipes.legacy import LEGACY_DATA_KEYS, translate_legacy
from discopop_cli.recipes.types import SECRET_KEYS, check_ranges, check_types, type_hints

# Keys the project itself implements on top of TRL, per command.
_SHARED_PROJECT_KEYS = {
    "chat_template",
    "tokenizer_name_or_path",
    "auto_insert_empty_system_msg",
    "global_batch_size",
    "master_weights",
    "decontaminate_humaneval",
}
PROJECT_KEYS: dict[str, set[str]] = {
    "align": _SHARED_PROJECT_KEYS | {"max_prompt_length", "loss_kwargs"},
    "sft": set(_SHARED_PROJECT_KEYS),
}

PATH_KEYS = ("model_name_or_path", "tokenizer_name_or_path")
# The types of the project's own keys, checked like TRL's (a bare type or a union of them).
PROJECT_TYPES: dict[str, Any] = {
    "chat_template": str | None,
    "tokenizer_name_or_path": str | None,
    "max_prompt_length": int | None,
    "loss_kwargs": dict | None,
    "auto_insert_empty_system_msg": bool | None,
    "global_batch_size": int | None,
    "master_weights": str | None,
    "decontaminate_humaneval": bool | str | None,
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Recipe:
    """A validated recipe, split by destination."""

    path: Path
    task: str
    model: dict[str, Any]
    training: dict[str, Any]
    data: DataSpec
    extras: dict[str, Any]
    resolved: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    overridden: set[str] = field(default_factory=set)  # top-level keys given with --set

    def training_config(self) -> Any:
        """Build TRL's trainer config; a value TRL rejects becomes a one-line error."""
        config_cls = _training_config_class(self.task)
        values = dict(self.training)
        # TRL defaults the deprecated `gradient_checkpointing` alias to True; giving the new name its value keeps
        # transformers from warning about a key the recipe never set.
        defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
        if "activation_checkpointing" in defaults and "activation_checkpointing" not in values:
            values["activation_checkpointing"] = defaults.get("gradient_checkpointing", False)
        try:
            return config_cls(**values)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.path.name}: {exc}") from None

    def model_config(self) -> Any:
        from trl import ModelConfig

        try:
            return ModelConfig(**self.model)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.path.name}: {exc}") from None


def _training_config_class(task: str) -> type:
    if task == "align":
        from trl import DPOConfig

        return DPOConfig
    from trl import SFTConfig

    return SFTConfig


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def valid_keys(task: str) -> tuple[set[str], set[str]]:
    """(ModelConfig keys, trainer-config keys) for a task."""
    from trl import ModelConfig

    model_keys = _field_names(ModelConfig)
    return model_keys, _field_names(_training_config_class(task)) - model_keys


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads `5e-7` (no dot) as a string; recipes and --set mean the number."""
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=1' -> (['a', 'b'], 1). Values are YAML, so `--set lr=5e-7` is a float and `--set x=[a,b]` a list."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {text!r}: expected KEY=VALUE, e.g. --set learning_rate=5e-7")
    try:
        parsed = _numbers(load_yaml_text(value)) if value.strip() else None
        if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
            parsed = value.strip()  # YAML 1.1 reads `no`/`yes`/`on`/`off` as booleans: `--set eval_strategy=no`
    except YamlRefused as exc:
        raise UserError(f"--set {key}: {exc}") from None
    except yaml.YAMLError:
        shown = "the value" if key in SECRET_KEYS else repr(value)  # never echo a token
        raise UserError(f"--set {key}: {shown} is not valid YAML; quote it, e.g. --set {key}='\"...\"'") from None
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: '{part}' is not a mapping in the recipe; set it as a whole")
            node = child
        node[path[-1]] = value
    return raw


def apply_unset(raw: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Remove each `--unset KEY` (dotted keys reach into mappings); a key the recipe does not have is an error."""
    for text in keys:
        path = text.strip().split(".")
        node = raw
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            raise UserError(f"--unset {text}: the recipe has no key '{text}' to remove{suggest(path[-1], list(raw))}")
        del node[path[-1]]
    return raw


def load_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise UserError(f"recipe {path} is a directory; pass the path of a YAML recipe, e.g. recipes/tiny-align.yaml")
    if not path.is_file():
        raise UserError(f"recipe {path} not found; pass the path of a YAML recipe, e.g. recipes/tiny-align.yaml")
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8"))
    except YamlRefused as exc:
        raise UserError(f"{path.name}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"recipe {path} cannot be read as UTF-8 text ({first_line(exc)}); save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"{path.name}: invalid YAML{line}; fix the syntax and retry") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path.name}: a recipe is a mapping of keys to values, got {type(raw).__name__}")
    return _numbers(raw)


def allows_pickle(training: dict[str, Any]) -> bool:
    """The explicit opt-in to pickled weights: `model_init_kwargs: {use_safetensors: false}` in the recipe."""
    kwargs = training.get("model_init_kwargs")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except ValueError:
            return False
    return isinstance(kwargs, dict) and kwargs.get("use_safetensors") is False


def _check_model_folder(source: str, value: Any, training: dict[str, Any]) -> None:
    """A local model folder must hold safetensors weights; pickled ones only with the recipe's explicit opt-in."""
    if not isinstance(value, str):
        return
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return  # a Hub id
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise UserError(
            f"{source}: model_name_or_path {value} has no config.json; point it at a saved transformers model folder"
        )
    if any(folder.glob("*.safetensors")):
        from discopop_cli.core.weights import read_folder

        adapter = (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()
        read_folder(folder, "adapter" if adapter else "model")  # headers only: a damaged file is refused here
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickled:
        raise UserError(f"{source}: model_name_or_path {value} holds no model weights (*.safetensors); fix the path")
    if allows_pickle(training):
        warn(f"{source}: loading pickled weights ({', '.join(pickled)}) as the recipe allows; trust their source")
        return
    raise UserError(
        f"{source}: {value} has pickled weights only ({', '.join(pickled)}), and unpickling can run code; "
        "discopop loads safetensors. Convert them (from_pretrained, then save_pretrained(safe_serialization=True)), "
        "or, trusting the source, add `model_init_kwargs: {use_safetensors: false}` to the recipe"
    )


def looks_local(value: str) -> bool:
    """A path, not a Hub id: Hub ids are `name` or `org/name`, never starting with '.', '/' or '~'."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1


def _resolve_path(key: str, value: Any, recipe: Path) -> Any:
    """A local path (from the current directory or beside the recipe), or a Hub id; a missing path is an error."""
    if not isinstance(value, str):
        return value
    resolved = resolve_local(value, recipe.parent)
    if not Path(resolved).expanduser().exists() and looks_local(value):
        raise UserError(
            f"{recipe.name}: {key} '{value}' is not a directory here or beside the recipe; "
            "fix the path (the tiny demo model is built by `make demo`)"
        )
    return resolved


def load_recipe(
    path: Path,
    task: str,
    *,
    overrides: list[str] | None = None,
    output_dir: Path | None = None,
    quiet: bool = False,
    bad_rows: BadRowPolicy | None = None,
    unset: list[str] | None = None,
) -> Recipe:
    """Load, override, translate, validate and route a recipe. Raises UserError before any work."""
    path = Path(path)
    raw = apply_unset(load_yaml(path), list(unset or []))
    raw = apply_overrides(raw, list(overrides or []))
    overridden = {parse_override(text)[0][0] for text in overrides or []}
    # A data key set to null is no data key: `--set dataset_mixer=null` makes room for a dataset_mixture.
    raw = {k: v for k, v in raw.items() if not (v is None and k in DATA_KEYS | LEGACY_DATA_KEYS)}
    if task == "sft" and "rpo_alpha" in raw:
        raise UserError(
            f"{path.name}: 'rpo_alpha' weighs an SFT term inside DPO; an sft recipe has no use for it, remove it"
        )
    legacy_mixer = "dataset_mixer" in raw
    raw, messages = translate_legacy(raw, path.name, task, overridden)
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)

    model_keys, training_keys = valid_keys(task)
    project_keys = PROJECT_KEYS[task]
    # Legacy keys are translated by now; one still here (e.g. dataset_kwargs in an align recipe) is not for this task.
    known = model_keys | training_keys | project_keys | DATA_KEYS
    for key in raw:
        if key not in known:
            raise UserError(
                f"{path.name}: unknown key '{key}'{suggest(key, known)} "
                "(fix or remove it; `--dry-run` checks a recipe without training)"
            )
    if not raw.get("model_name_or_path"):
        raise UserError(f"{path.name}: 'model_name_or_path' is missing; name a Hub model id or a local directory")

    for key in PATH_KEYS:
        if key in raw:
            raw[key] = _resolve_path(key, raw[key], path)

    model = {k: v for k, v in raw.items() if k in model_keys}
    training = {k: v for k, v in raw.items() if k in training_keys}
    extras = {k: v for k, v in raw.items() if k in project_keys}
    if training.get("activation_checkpointing") == "auto":  # decided by the memory plan at start (train/speed.py)
        extras["activation_checkpointing"] = training.pop("activation_checkpointing")
    from trl import ModelConfig

    check_types(path.name, model, type_hints(ModelConfig))
    check_types(path.name, training, type_hints(_training_config_class(task)))
    check_types(path.name, extras, PROJECT_TYPES)
    for values in (model, training):
        check_ranges(path.name, values)
    _check_model_folder(path.name, raw["model_name_or_path"], training)
    data = parse_data_spec({k: v for k, v in raw.items() if k in DATA_KEYS}, path)
    for spec in [*data.train, *data.eval]:
        spec.from_mixer = legacy_mixer
    training.setdefault("output_dir", f"outputs/{path.stem}")
    raw["output_dir"] = training["output_dir"]

    _cap_dataset_workers(training, path.name, messages)
    if not quiet:
        for message in messages:
            notice(message)
    recipe = Recipe(path, task, model, training, data, extras, raw, messages, overridden)
    _check_consistency(recipe)
    # The local data files are read far enough to know they exist, hold rows and have the task's columns.
    check_local_data(
        data,
        task,
        text_field=str(training.get("dataset_text_field", "text")),
        with_eval=str(training.get("eval_strategy", "no")) != "no",
        policy=bad_rows,
    )
    return recipe


def _cap_dataset_workers(training: dict[str, Any], source: str, messages: list[str]) -> None:
    """More tokenizing processes than cores only adds start-up and contention (12 on 2 cores: minutes for 300 rows)."""
    import os

    workers = training.get("dataset_num_proc")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(workers, int) and not isinstance(workers, bool) and workers > cores:
        training["dataset_num_proc"] = cores
        messages.append(f"{source}: dataset_num_proc {workers} capped at the {cores} CPU core(s) here")


def local_inputs(recipe: Recipe) -> list[tuple[str, Path]]:
    """What a run reads from disk: the recipe, a local model and tokenizer, local datasets."""
    found = [("recipe", recipe.path)]
    for key, what in (("model_name_or_path", "model"), ("tokenizer_name_or_path", "tokenizer")):
        value = recipe.model.get(key) or recipe.extras.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            found.append((what, Path(value)))
    found += [("dataset", spec.local_path) for spec in [*recipe.data.train, *recipe.data.eval] if spec.local_path]
    return found


def check_output_apart(recipe: Recipe) -> None:
    """The output_dir of a training run is none of its inputs, and neither holds nor lies inside one."""
    from discopop_cli.core.outputs import check_apart

    check_apart(Path(str(recipe.training["output_dir"])), local_inputs(recipe), "output_dir")


def _check_consistency(recipe: Recipe) -> None:
    name = recipe.path.name
    eval_strategy = str(recipe.training.get("eval_strategy", "no"))
    if eval_strategy != "no" and not recipe.data.has_eval:
        if any(spec.from_mixer for spec in recipe.data.train):
            raise UserError(
                f"{name}: eval_strategy is '{eval_strategy}' but dataset_splits names no test split; add one (e.g. "
                "--set dataset_splits=[train,test]), or replace the 2024 dataset_mixer with a dataset_mixture that "
                "carves one (--unset dataset_mixer --unset dataset_splits --set 'dataset_mixture={datasets: [...], "
                "test_split_size: 0.05}'), or --set eval_strategy=no"
            )
        raise UserError(
            f"{name}: eval_strategy is '{eval_strategy}' but the recipe has no eval data; "
            "add dataset_mixture.test_split_size or a test split, or set eval_strategy: 'no'"
        )
    # beta scales the log-ratio margin (its sign decides which completion is preferred) and the DiscoPOP losses divide
    # by tau: zero or a negative value trains towards the rejected answers, or divides by zero, without an error.
    scales = {key: recipe.training.get(key) for key in ("beta", "discopop_tau")}
    if isinstance(recipe.extras.get("loss_kwargs"), dict):
        scales["loss_kwargs.discopop_tau"] = recipe.extras["loss_kwargs"].get("discopop_tau")
    for key, value in scales.items():
        if isinstance(value, int | float) and value <= 0:
            raise UserError(f"{name}: {key} must be positive, got {value!r}; the paper's recipe uses 0.05")
    max_prompt = recipe.extras.get("max_prompt_length")
    max_length = recipe.training.get("max_length", 1024)
    if max_prompt is not None:
        if not isinstance(max_prompt, int) or max_prompt <= 0:
            raise UserError(f"{name}: max_prompt_length must be a positive integer, got {max_prompt!r}")
        if max_length is not None and max_prompt >= max_length:
            raise UserError(
                f"{name}: max_prompt_length ({max_prompt}) must be below max_length ({max_length}) "
                "to leave room for the completion"
            )
    global_batch = recipe.extras.get("global_batch_size")
    if global_batch is not None and global_batch < 1:
        raise UserError(f"{name}: global_batch_size must be a positive integer, got {global_batch!r}")
    master = recipe.extras.get("master_weights")
    if master is not None and master not in ("float32", "bfloat16"):
        raise UserError(f"{name}: master_weights must be float32 (the default) or bfloat16, got {master!r}")
    if recipe.model.get("use_peft") is False and any(
        k.startswith("lora_") for k in recipe.model if recipe.model[k] is not None
    ):
        warn(f"{name}: lora_* keys are set but use_peft is false; they have no effect")


def check_no_accelerator(recipe: Recipe) -> bool:
    """On a machine without GPU/XPU/MPS, train in float32 on the CPU and say so. Returns True on CPU."""
    if accelerator_available():
        return False
    changed = [k for k in ("bf16", "fp16") if recipe.training.get(k)]
    for key in ("bf16", "fp16"):
        recipe.training[key] = False
    recipe.training["use_cpu"] = True
    dtype = recipe.model.get("dtype")
    if dtype not in (None, "float32", "auto"):
        changed.append(f"dtype {dtype}")
    recipe.model["dtype"] = "float32"
    extra = f" ({', '.join(changed)} turned off)" if changed else ""
    notice(f"no GPU found: training on the CPU in float32{extra}")
    return True


def dump_resolved(resolved: dict[str, Any]) -> str:
    """The recipe as it was run (translated keys, overrides, data as a dataset_mixture), as YAML, minus secrets."""
    public = {k: v for k, v in resolved.items() if k not in SECRET_KEYS}
    return yaml.safe_dump(public, sort_keys=False, allow_unicode=True)
