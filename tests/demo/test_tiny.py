"""The embedded tiny Gemma + ChatML model: tokenizer, chat template, model, determinism and the build entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from discopop_cli.demo import tiny
from discopop_cli.demo.tiny import CHATML_TEMPLATE, build_tiny_model

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
]
RENDERED = (
    "<bos><|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n"
    "<|im_start|>assistant\n2 plus 3 is 5.<|im_end|>\n<eos>"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sp_model(tiny_model_dir: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model"))


def test_saved_files(tiny_model_dir: Path) -> None:
    names = {path.name for path in tiny_model_dir.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert expected | {"tokenizer_config.json", "tokenizer.model"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "gemma"
    assert config["architectures"] == ["GemmaForCausalLM"]
    assert config["tie_word_embeddings"] is True


@pytest.mark.parametrize("token", ["<|im_start|>", "<|im_end|>"])
def test_chatml_tokens_are_single_ids(tokenizer, token: str) -> None:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids(token)]
    assert token in tokenizer.all_special_tokens
    # Surrounded by text they stay whole too.
    assert ids[0] in tokenizer(f"hello{token}world", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("token", ["<|im_start|>", "<|im_end|>"])
def test_chatml_tokens_are_single_sentencepiece_pieces(sp_model, tokenizer, token: str) -> None:
    assert sp_model.encode(token, out_type=str) == [token]
    assert sp_model.piece_to_id(token) == tokenizer.convert_tokens_to_ids(token)
    assert not sp_model.is_unknown(sp_model.piece_to_id(token))


def test_gemma_special_token_layout(sp_model, tokenizer) -> None:
    layout = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for piece, index in layout.items():
        assert sp_model.id_to_piece(index) == piece
        assert tokenizer.convert_tokens_to_ids(piece) == index
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3
    assert sp_model.get_piece_size() == len(tokenizer)


def test_sentencepiece_and_transformers_tokenize_alike(sp_model, tokenizer) -> None:
    texts = [
        "What is the capital of France? The capital of France is Paris.",
        "  two  spaces, a\ttab and\nnewlines\n\n",
        "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "Unseen: Zürich, 東京, 🙂 and 12345.",
    ]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == sp_model.encode(text), text
        assert tokenizer.decode(ids) == text


def test_bos_added_by_default(tokenizer) -> None:
    ids = tokenizer("Hello there")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1


def test_chat_template_renders_chatml(tokenizer) -> None:
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == RENDERED
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n")

    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids[-1] == tokenizer.eos_token_id
    assert ids == tokenizer(RENDERED, add_special_tokens=False)["input_ids"]


def test_model_forward(tiny_model_dir: Path, tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GemmaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, GemmaForCausalLM)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert len(tokenizer) <= model.config.vocab_size
    assert max(tokenizer.get_vocab().values()) < model.config.vocab_size

    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), model.config.vocab_size)
    assert torch.isfinite(logits).all()

    eos = model.generation_config.eos_token_id
    assert set(eos) == {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert model.generation_config.bos_token_id == tokenizer.bos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_weights_are_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def weights(name: str, seed: int) -> dict:
        return load_file(build_tiny_model(tmp_path / name, seed=seed) / "model.safetensors")

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert first.keys() == again.keys() and first
    assert all(first[key].equal(again[key]) for key in first)
    assert not all(first[key].equal(other[key]) for key in first)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (tmp_path / "b" / "tokenizer.model").read_bytes()


def test_default_corpus_without_shipped_dataset(tmp_path: Path, tiny_dataset_path: Path) -> None:
    assert tiny.default_corpus(tmp_path / "missing.jsonl") == list(tiny._FALLBACK_CORPUS)
    first = json.loads(tiny_dataset_path.read_text(encoding="utf-8").splitlines()[0])
    shipped = tiny.default_corpus(tiny_dataset_path)
    assert {first["chosen"][1]["content"], first["rejected"][1]["content"]} <= set(shipped)


def test_shipped_dataset_shape(tiny_dataset_path: Path) -> None:
    rows = [json.loads(line) for line in tiny_dataset_path.read_text(encoding="utf-8").splitlines()]
    assert 96 <= len(rows) <= 160
    for row in rows:
        assert set(row) == {"chosen", "rejected"}
        chosen, rejected = row["chosen"], row["rejected"]
        assert [m["role"] for m in chosen] == [m["role"] for m in rejected] == ["user", "assistant"]
        assert chosen[0] == rejected[0]
        assert chosen[1]["content"] != rejected[1]["content"]
        assert all(len(m["content"].split()) < 25 for m in (chosen[1], rejected[1]))
    assert len({row["chosen"][0]["content"] for row in rows}) > 0.9 * len(rows)


def test_cli_refuses_then_builds_with_force(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    result = subprocess.run(
        [sys.executable, "-m", "discopop_cli.demo.tiny", str(out)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "--force" in result.stderr
    assert [path.name for path in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"

    # --force replaces only what discopop wrote: the user's file stays, and so does the refusal.
    capfd.readouterr()
    assert tiny.main([str(out), "--force"]) == 2
    assert "--force replaces only discopop's own output" in capfd.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"

    (out / "keep.txt").unlink()
    assert tiny.main([str(out)]) == 0
    first = (out / "model.safetensors").stat().st_mtime_ns
    capfd.readouterr()
    assert tiny.main([str(out), "--force"]) == 0
    captured = capfd.readouterr()
    assert captured.out == f"{out}\n"
    assert captured.err == ""
    names = {path.name for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"} <= names
    assert (out / "model.safetensors").stat().st_mtime_ns != first
    assert [path.name for path in tmp_path.iterdir()] == ["tiny"]  # no staging directory left behind


def test_cli_builds_into_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert tiny.main([str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "config.json").is_file()
