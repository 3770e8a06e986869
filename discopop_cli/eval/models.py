"""The models `eval prefs` compares, checked before any weights load: folders that hold a model, one vocabulary.

Rewards and accuracies compare log-probabilities of the same token ids, so every model and the reference must
tokenize the pairs alike: their vocabularies are compared (tokenizers load in a second; weights are not touched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError, first_line

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or Path(value).expanduser().exists()


def identity(name: str) -> str:
    """One key per model: a local folder by its resolved path (so `./m` and `/abs/m` are one model), a Hub id as is."""
    return str(Path(name).expanduser().resolve()) if looks_local(name) else name


def check_model(name: str, role: str = "model") -> None:
    """A local model folder has a config and safetensors weights (an adapter folder, its adapter weights)."""
    path = Path(name).expanduser()
    if not looks_local(name):
        return  # a Hub id: loading says whether it is cached
    if not path.exists():
        raise UserError(f"{role} {name} not found; pass a model folder (config.json + *.safetensors) or a Hub id")
    if path.is_file():
        if path.suffix == ".gguf":
            raise UserError(
                f"{role} {name} is a GGUF file; eval prefs reads transformers model folders: score the folder it was "
                "exported from (a GGUF runs through `discopop eval tasks`)"
            )
        raise UserError(f"{role} {name} is a file; pass a model folder (config.json + *.safetensors)")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise UserError(f"{role} {name} has no config.json; point it at a saved transformers model folder")
    if any(path.glob("*.safetensors")):
        from discopop_cli.core.weights import read_folder

        read_folder(path, role)  # headers only: a damaged weights file is refused before any model loads
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UserError(
            f"{role} {name} has pickled weights only ({', '.join(pickled)}), and unpickling can run code; convert them "
            "(from_pretrained, then save_pretrained(safe_serialization=True))"
        )
    raise UserError(f"{role} {name} holds no model weights (*.safetensors); fix the path")


def check_models(names: list[str], *, ref: str | None) -> None:
    if not names:
        raise UserError("no model to score; name one or more model folders (or Hub ids)")
    seen: set[str] = set()
    for name in names:
        key = identity(name)
        if key in seen:
            raise UserError(f"model {name} is listed twice; name each model once")
        seen.add(key)
        check_model(name)
    if ref is not None:
        check_model(ref, "reference model")


def _tokenizer_source(name: str) -> str:
    """An adapter folder without its own tokenizer uses its base model's."""
    path = Path(name).expanduser()
    if (path / "adapter_config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        from discopop_cli.core.json_files import read_json

        return str(read_json(path / "adapter_config.json", "adapter").get("base_model_name_or_path") or name)
    return name


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    source = _tokenizer_source(name)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"could not load the tokenizer of {name}: {first_line(exc)}") from None


def shared_tokenizer(names: list[str], ref: str | None, tokenizer: Any, chat_template: str | None) -> Any:
    """The tokenizer that tokenizes the pairs for every model; a model whose vocabulary differs is refused.

    `tokenizer` is a name (folder or Hub id), an already loaded tokenizer, or None for the first model's."""
    if tokenizer is not None and not isinstance(tokenizer, str | Path):
        anchor_name, anchor = getattr(tokenizer, "name_or_path", "the given tokenizer"), tokenizer
    else:
        anchor_name = str(tokenizer) if tokenizer is not None else names[0]
        anchor = load_tokenizer(anchor_name)
    if chat_template:
        anchor.chat_template = chat_template
    vocab = anchor.get_vocab()
    for name in [*names, *([ref] if ref is not None else [])]:
        if name == anchor_name:
            continue
        other = load_tokenizer(name).get_vocab()
        if other != vocab:
            differing = len(set(other.items()) ^ set(vocab.items()))
            raise UserError(
                f"{name} has another tokenizer than {anchor_name} ({len(other)} vs {len(vocab)} tokens, "
                f"{differing} entries differ); rewards compare log-probs of the same tokens, so score models that "
                "share a tokenizer (run eval prefs once per tokenizer)"
            )
    return anchor
