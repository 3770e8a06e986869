"""`discopop export --gguf`: tiny models through the project's converter, checked by llama.cpp itself.

Three tiny models: the default Gemma (SentencePiece with ChatML special pieces), the same Gemma saved the way
`discopop align` saves it (tokenizer.json only, no tokenizer.model), and a Llama with a byte-level BPE vocabulary
trained here with the `tokenizers` library. llama-cpp-python is required, not optional: CI installs it, and a
missing one must fail these tests rather than skip them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from gguf import GGUFReader, LlamaFileType
from tiny_bpe import IM_END, IM_START, build_tiny_bpe_model
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.demo.tiny import CHATML_TEMPLATE, build_tiny_model
from discopop_cli.export import chat_template, tensors
from discopop_cli.export.modelfile import GEMMA_NOTICE, gemma_terms_of_use
from discopop_cli.export.quants import quant_type
from discopop_cli.export.verify import VerificationFailed, _ladder_hint, compare, verify_export

runner = CliRunner()


@pytest.fixture(scope="module")
def gemma_json_only_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma as `discopop align` saves it: tokenizer.json, no SentencePiece tokenizer.model."""
    copy = tmp_path_factory.mktemp("tiny-gemma-json") / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "tokenizer.model").unlink()
    return copy


@pytest.fixture(scope="module")
def gemma_256_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows of 256 values everywhere, so llama.cpp's k-quants apply without falling back."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-gemma-256") / "model",
        hidden_size=256,
        intermediate_size=512,
        num_heads=4,
        head_dim=64,
        num_kv_heads=1,
    )


def export(*args: str | Path) -> str:
    result = runner.invoke(app, ["export", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def fields(path: Path) -> dict[str, object]:
    reader = GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


MODELS = ["gemma_sentencepiece", "gemma_tokenizer_json", "llama_byte_level_bpe"]


@pytest.fixture
def model_dir(request: pytest.FixtureRequest) -> Path:
    fixture = {
        "gemma_sentencepiece": "tiny_model_dir",
        "gemma_tokenizer_json": "gemma_json_only_dir",
        "llama_byte_level_bpe": "llama_bpe_dir",
    }[request.param]
    return request.getfixturevalue(fixture)


@pytest.mark.parametrize("quant", ["f32", "f16"])
@pytest.mark.parametrize("model_dir", MODELS, indirect=True)
def test_float_export_runs_in_llama_cpp_like_transformers(model_dir: Path, quant: str, tmp_path: Path) -> None:
    gguf_path = tmp_path / f"model-{quant}.gguf"
    output = export(model_dir, "--gguf", "--quant", quant, "--output", gguf_path)
    assert f"exported: {gguf_path} ({quant.upper()}," in output

    report = compare(model_dir, gguf_path, quant_type(quant))
    labels = [check.label for check in report.checks]
    assert labels == ["system + user", "multi-turn", "system + multi-turn", "plain text"]
    for check in report.checks:
        assert check.llama_ids == check.hf_ids, check.label  # the same token ids from llama.cpp's own tokenizer
        assert check.top1_agreeing == check.untied > 0, check.label  # top-1 wherever the reference has no tie
        assert check.llama_greedy == check.hf_greedy and check.hf_greedy, check.label
        assert check.max_logit_diff < (1e-3 if quant == "f32" else 5e-3), check.label
    assert report.passed


@pytest.mark.parametrize("model_type", ["qwen2", "mistral"])
def test_qwen2_and_mistral_export_runs_in_llama_cpp_like_transformers(model_type: str, tmp_path: Path) -> None:
    model_dir = build_tiny_bpe_model(tmp_path / model_type, model_type)
    gguf_path = tmp_path / "model.gguf"
    export(model_dir, "--gguf", "--quant", "f32", "--output", gguf_path)
    meta = fields(gguf_path)
    assert meta["general.architecture"] == ("qwen2" if model_type == "qwen2" else "llama")
    assert meta["tokenizer.ggml.pre"] == ("qwen2" if model_type == "qwen2" else "llama-bpe")
    report = compare(model_dir, gguf_path, quant_type("f32"))
    for check in report.checks:
        assert check.llama_ids == check.hf_ids, check.label
        assert check.top1_agreeing == check.untied > 0 and check.llama_greedy == check.hf_greedy, check.label
        assert check.max_logit_diff < 1e-3, check.label


NEW_ARCHITECTURES = {
    # model_type: (config overrides, GGUF architecture)
    "qwen3": ({"tie_word_embeddings": True}, "qwen3"),
    "gemma2": ({"tie_word_embeddings": True, "query_pre_attn_scalar": 16, "num_hidden_layers": 4}, "gemma2"),
    "gemma3_text": (
        {"tie_word_embeddings": True, "query_pre_attn_scalar": 16, "num_hidden_layers": 6, "rope_theta": None},
        "gemma3",
    ),
    "phi3": ({"sliding_window": None}, "phi3"),
    "smollm3": ({"num_hidden_layers": 4, "tie_word_embeddings": True}, "smollm3"),
}


@pytest.mark.parametrize("model_type", list(NEW_ARCHITECTURES))
def test_new_architectures_run_in_llama_cpp_like_transformers(model_type: str, tmp_path: Path) -> None:
    overrides, gguf_arch = NEW_ARCHITECTURES[model_type]
    # Not named after the architecture: llama.cpp gives a model whose name holds "phi3" Phi-3's token rules.
    model_dir = build_tiny_bpe_model(tmp_path / "model", model_type, **overrides)
    gguf_path = tmp_path / "model.gguf"
    export(model_dir, "--gguf", "--quant", "f32", "--output", gguf_path)
    assert fields(gguf_path)["general.architecture"] == gguf_arch
    report = compare(model_dir, gguf_path, quant_type("f32"))
    for check in report.checks:
        assert check.llama_ids == check.hf_ids, check.label  # tokens equal
        assert check.top1_agreeing == check.untied > 0, (check.label, check.top1_agreeing, check.untied)
        assert check.llama_greedy == check.hf_greedy and check.hf_greedy, check.label
        assert check.max_logit_diff < 1e-3, (check.label, check.max_logit_diff)


@pytest.mark.parametrize("model_dir", MODELS, indirect=True)
def test_chatml_tokens_are_single_llama_cpp_tokens(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    gguf_path = tmp_path / "model.gguf"
    export(model_dir, "--gguf", "--quant", "f32", "--output", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=64, verbose=False)
    try:
        for token in (IM_START, IM_END):
            expected = [tokenizer.convert_tokens_to_ids(token)]
            assert llm.tokenize(token.encode(), add_bos=False, special=True) == expected
            text = f"hello{token}world"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        # <|im_end|> ends generation in llama.cpp, as it does in transformers' generation config.
        assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, tokenizer.convert_tokens_to_ids(IM_END))
    finally:
        llm.close()


def test_gemma_metadata_and_tensors(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    gguf_path = tmp_path / "gemma.gguf"
    export(tiny_model_dir, "--gguf", "--quant", "f32", "--output", gguf_path)
    meta = fields(gguf_path)
    assert meta["general.architecture"] == "gemma"
    assert meta["general.file_type"] == LlamaFileType.ALL_F32
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("llama", "default")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == 512 and tokens[5:7] == [IM_START, IM_END]
    assert types[5] == types[6] == 3  # CONTROL, as transformers treats them: special, matched whole
    assert types[3] == 2 and types[tokens.index("<0x0A>")] == 6  # UNKNOWN, BYTE
    ids = [meta[f"tokenizer.ggml.{kind}_token_id"] for kind in ("padding", "eos", "bos", "unknown", "eot")]
    assert ids == [0, 1, 2, 3, 6]
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["tokenizer.ggml.add_space_prefix"] is False
    assert meta["tokenizer.chat_template"] == CHATML_TEMPLATE

    reader = GGUFReader(gguf_path)
    stored = {tensor.name: np.asarray(tensor.data) for tensor in reader.tensors}
    source = load_file(tiny_model_dir / "model.safetensors")
    assert "output.weight" not in stored  # Gemma's head is its embedding
    # llama.cpp's Gemma multiplies by the stored norm weight; transformers by 1 + weight.
    np.testing.assert_array_equal(
        stored["blk.0.attn_norm.weight"], source["model.layers.0.input_layernorm.weight"] + np.float32(1)
    )
    np.testing.assert_array_equal(stored["token_embd.weight"], source["model.embed_tokens.weight"])


def test_llama_metadata_and_chunked_streaming(llama_bpe_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from safetensors.numpy import load_file

    whole = tmp_path / "whole.gguf"
    export(llama_bpe_dir, "--gguf", "--quant", "f16", "--output", whole)
    meta = fields(whole)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
    assert len(meta["tokenizer.ggml.tokens"]) == 768 and meta["tokenizer.ggml.tokens"][767] == "[PAD767]"
    assert meta["tokenizer.ggml.merges"][0].count(" ") == 1
    assert meta["tokenizer.ggml.eot_token_id"] == meta["tokenizer.ggml.tokens"].index(IM_END)
    assert meta["llama.rope.freq_base"] == 500000.0 and meta["llama.attention.head_count_kv"] == 2

    stored = {tensor.name: np.asarray(tensor.data) for tensor in GGUFReader(whole).tensors}
    assert stored["output.weight"].dtype == np.float16 and stored["blk.0.ffn_norm.weight"].dtype == np.float32
    # q/k rows reordered per head from rotate-halves to llama.cpp's adjacent pairs.
    k_proj = load_file(llama_bpe_dir / "model.safetensors")["model.layers.0.self_attn.k_proj.weight"]
    paired = k_proj.reshape(2, 2, 8, 64).swapaxes(1, 2).reshape(32, 64)
    np.testing.assert_array_equal(stored["blk.0.attn_k.weight"], paired.astype(np.float16))

    # Tiny chunks (a few rows, whole heads for q/k) must write the very same file.
    monkeypatch.setattr(tensors, "CHUNK_ELEMENTS", 100)
    chunked = tmp_path / "chunked" / "whole.gguf"
    export(llama_bpe_dir, "--gguf", "--quant", "f16", "--output", chunked)
    assert chunked.read_bytes() == whole.read_bytes()


def test_q4_k_m_export_loads_in_llama_cpp(gemma_256_dir: Path) -> None:
    output = export(gemma_256_dir, "--gguf")  # q4_k_m is the default, written beside the model
    gguf_path = gemma_256_dir.parent / "model-gguf" / "model-Q4_K_M.gguf"
    assert f"exported: {gguf_path} (Q4_K_M," in output
    assert fields(gguf_path)["general.file_type"] == LlamaFileType.MOSTLY_Q4_K_M
    assert {"Q4_K", "Q6_K"} <= {tensor.tensor_type.name for tensor in GGUFReader(gguf_path).tensors}
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=64, verbose=False)
    try:
        assert llama_cpp.llama_model_ftype(llm._model.model) == LlamaFileType.MOSTLY_Q4_K_M
        assert llm._model.desc().endswith("Q4_K - Medium")
    finally:
        llm.close()
    report = compare(gemma_256_dir, gguf_path, quant_type("q4_k_m"))
    assert all(check.ids_equal for check in report.checks)
    assert 0.5 < report.top1_agreement <= 1.0
    assert sorted(p.name for p in gguf_path.parent.iterdir()) == ["LICENSE", "Modelfile", "NOTICE", "model-Q4_K_M.gguf"]


EXPECTED_GEMMA_MODELFILE = '''\
# helpful-gemma, exported by discopop-cli. Create the Ollama model with:
#   ollama create helpful-gemma -f Modelfile
FROM ./helpful-gemma-F16.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}\
{{ if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}{{ end }}{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}{{ end }}"""
PARAMETER stop "<|im_start|>"
PARAMETER stop "<|im_end|>"
PARAMETER penalize_newline false
PARAMETER repeat_penalty 1
SYSTEM """You are a helpful assistant."""
LICENSE """{terms}"""
'''


def test_modelfile_and_notice_for_chatml_gemma(tiny_model_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "new" / "folder"  # created on the way
    export(
        tiny_model_dir, "--gguf", "--quant", "f16", "--output", out_dir / "helpful-gemma-F16.gguf",
        "--name", "helpful-gemma", "--system", "You are a helpful assistant.",
    )  # fmt: skip
    terms = gemma_terms_of_use()
    assert terms.startswith("Gemma Terms of Use Last modified: February 21, 2024 By using, reproducing")
    assert terms.endswith("by not exercising (or delaying the exercise of) any rights under this Agreement.")
    assert len(terms) == 8405  # the model page's text, whole
    assert (out_dir / "Modelfile").read_text() == EXPECTED_GEMMA_MODELFILE.replace("{terms}", terms)
    assert (out_dir / "LICENSE").read_text() == terms + "\n"
    notice = (out_dir / "NOTICE").read_text()
    assert notice.splitlines()[0] == GEMMA_NOTICE
    assert GEMMA_NOTICE == (
        "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
    )
    assert "ai.google.dev/gemma/prohibited_use_policy" in notice
    assert fields(out_dir / "helpful-gemma-F16.gguf")["general.name"] == "helpful-gemma"
    assert not list(out_dir.glob(".*"))  # no temporary files left behind


def test_modelfile_for_llama_has_no_gemma_parts(llama_bpe_dir: Path, tmp_path: Path) -> None:
    export(llama_bpe_dir, "--gguf", "--quant", "q8_0", "--output", tmp_path / "llama.gguf")
    modelfile = (tmp_path / "Modelfile").read_text()
    assert "FROM ./llama.gguf\n" in modelfile
    assert 'PARAMETER stop "<|im_start|>"\nPARAMETER stop "<|im_end|>"\n' in modelfile
    assert "penalize_newline" not in modelfile and "LICENSE" not in modelfile and "SYSTEM" not in modelfile
    assert not (tmp_path / "NOTICE").exists()
    assert fields(tmp_path / "llama.gguf")["general.file_type"] == LlamaFileType.MOSTLY_Q8_0


def test_several_quants_from_one_conversion_into_one_folder(llama_bpe_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(llama_bpe_dir, model_dir)
    (model_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A tiny llama\n")
    output = export(model_dir, "--gguf", "--quant", "q8_0,f16", "--quant", "Q8_0", "--name", "tiny")  # both forms
    folder = tmp_path / "model-gguf"
    assert sorted(p.name for p in folder.iterdir()) == [
        "LICENSE", "Modelfile.F16", "Modelfile.Q8_0", "tiny-F16.gguf", "tiny-Q8_0.gguf",
    ]  # fmt: skip
    assert f"exported: {folder / 'tiny-Q8_0.gguf'} (Q8_0," in output and f"-f {folder / 'Modelfile.Q8_0'} (" in output
    assert fields(folder / "tiny-F16.gguf")["general.file_type"] == LlamaFileType.MOSTLY_F16
    assert (
        "#   ollama create tiny -f Modelfile.Q8_0\nFROM ./tiny-Q8_0.gguf\n" in (folder / "Modelfile.Q8_0").read_text()
    )
    license_text = "SPDX-License-Identifier: Apache-2.0\nhttps://spdx.org/licenses/Apache-2.0.html"
    assert (folder / "LICENSE").read_text() == license_text + "\n"
    assert f'LICENSE """{license_text}"""' in (folder / "Modelfile.F16").read_text()
    # A license file in the model folder is the text itself; one file name for several files is refused.
    (model_dir / "LICENSE").write_text("Copyright 2024 Someone\n\nPermission is granted ...\n")
    export(model_dir, "--gguf", "--quant", "f16", "-o", tmp_path / "one" / "m.gguf")
    assert (tmp_path / "one" / "LICENSE").read_text() == "Copyright 2024 Someone\n\nPermission is granted ...\n"
    result = runner.invoke(
        app, ["export", str(model_dir), "--gguf", "--quant", "f16", "--quant", "q8_0", "-o", str(tmp_path / "x.gguf")]
    )
    assert result.exit_code == 2 and "names one file, but 2 quant types make 2 files" in result.output


def test_stops_are_turn_markers_never_whitespace() -> None:
    from discopop_cli.export.modelfile import parameter_value

    # Gemma 3's own template: "\n" is a user-defined token of its vocabulary, not a control token.
    gemma = chat_template.read_chat_format(GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>"})
    controls = {"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"}
    assert chat_template.stop_strings(gemma, controls, "<bos>") == ["<start_of_turn>", "<end_of_turn>"]
    assert chat_template.stop_strings(gemma, controls | {"\n", "\n\n"}, "<bos>") == [
        "<start_of_turn>",
        "<end_of_turn>",
    ]
    # Ollama's parser has no escapes: values are written verbatim, and what it cannot read back is refused.
    assert parameter_value("<|im_end|>") == '"<|im_end|>"' and parameter_value("a\\b") == '"a\\b"'
    for unreadable in ("\n", "two\nlines", "", '""x'):
        with pytest.raises(ValueError):
            parameter_value(unreadable)


def test_verify_prints_a_table_and_fails_on_a_mismatch(llama_bpe_dir: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    gguf_path = tmp_path / "out" / "llama.gguf"
    result = runner.invoke(
        app, ["export", str(llama_bpe_dir), "--gguf", "--quant", "f16", "-o", str(gguf_path), "--verify"]
    )
    assert result.exit_code == 0, result.output
    assert "llama.cpp (F16 GGUF) vs transformers" in result.output
    assert "verify passed (F16): mean KL 0.0000 (≤ 0.002)" in result.output

    # The same tokenizer, a head that prefers what the exported one ranks last: ids agree, top-1 tokens do not.
    other = tmp_path / "other"
    shutil.copytree(llama_bpe_dir, other)
    weights = load_file(other / "model.safetensors")
    weights["lm_head.weight"] = -weights["lm_head.weight"]
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(VerificationFailed, match=r"F16 is too far from transformers \(mean KL .* > 0.002;") as failed:
        verify_export(other, gguf_path, quant_type("f16"))
    assert str(failed.value).endswith("; the export itself is wrong, not its precision")
    # A quant that fails names the next larger type to try.
    assert _ladder_hint(quant_type("q4_k_m")) == "try a larger type: --quant q5_k_m"
    assert VerificationFailed.exit_code == 1


def test_refuses_to_replace_without_force(tiny_model_dir: Path, tmp_path: Path) -> None:
    gguf_path = tmp_path / "model.gguf"
    export(tiny_model_dir, "--gguf", "--quant", "f32", "-o", gguf_path)
    before = gguf_path.read_bytes()
    result = runner.invoke(app, ["export", str(tiny_model_dir), "--gguf", "--quant", "f16", "-o", str(gguf_path)])
    assert result.exit_code == 2
    assert "already exists; pass --force" in result.output
    assert gguf_path.read_bytes() == before
    # Another GGUF in the same folder would rewrite its Modelfile: that needs --force too.
    other = tmp_path / "other.gguf"
    result = runner.invoke(app, ["export", str(tiny_model_dir), "--gguf", "--quant", "f32", "-o", str(other)])
    assert result.exit_code == 2 and "Modelfile" in result.output and not other.exists()
    export(tiny_model_dir, "--gguf", "--quant", "f16", "-o", gguf_path, "--force")
    assert fields(gguf_path)["general.file_type"] == LlamaFileType.MOSTLY_F16


def test_refuses_an_unsupported_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]})
    )
    result = runner.invoke(app, ["export", str(tmp_path), "--gguf"])
    assert result.exit_code == 2
    assert "gpt_neox model (GPTNeoXForCausalLM)" in result.output
    assert "supports gemma, gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3, smollm3" in result.output


@pytest.mark.parametrize("flags", [["--quant", "q4_k_m"], ["--quant", "f16", "--verify"]])
def test_missing_llama_cpp_python_is_one_line(tiny_model_dir: Path, tmp_path: Path, monkeypatch, flags) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    result = runner.invoke(app, ["export", str(tiny_model_dir), "--gguf", "-o", str(tmp_path / "m.gguf"), *flags])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "needs llama-cpp-python" in lines[0]
    assert "pip install 'discopop-cli[gguf]'" in lines[0]
    assert not list(tmp_path.iterdir())


def test_other_refusals(tiny_model_dir: Path, tmp_path: Path) -> None:
    cases = {
        (): "choose an export format: --gguf",
        ("--gguf", "--quant", "q9"): "unknown --quant 'q9'",
    }
    for flags, message in cases.items():
        result = runner.invoke(app, ["export", str(tiny_model_dir), *flags, "-o", str(tmp_path / "m.gguf")])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "nowhere"), "--gguf"])
    assert result.exit_code == 2 and "does not exist" in result.output
    # A directory that does not exist yet is not taken for a file name.
    result = runner.invoke(
        app, ["export", str(tiny_model_dir), "--gguf", "--quant", "f16", "-o", str(tmp_path / "new")]
    )
    assert result.exit_code == 2 and "neither an existing directory nor a .gguf file" in result.output
    assert list(tmp_path.iterdir()) == []
    # An existing file that is not a .gguf (here the model's own weights): the example given is a path that works.
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    before = weights.read_bytes()
    result = runner.invoke(app, ["export", str(model), "--gguf", "--quant", "f16", "-o", str(weights)])
    suggested = tmp_path / "model-gguf" / "model-F16.gguf"
    assert result.exit_code == 2 and f"name the file, e.g. {suggested}" in " ".join(result.output.split())
    result = runner.invoke(app, ["export", str(model), "--gguf", "--quant", "f16", "-o", str(suggested)])
    assert result.exit_code == 0, result.output
    assert suggested.is_file() and weights.read_bytes() == before


def test_no_partial_file_after_a_failure(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from discopop_cli.export import convert

    def failing(rows, start):
        raise KeyboardInterrupt

    original = convert.plan

    def plan_with_failure(*args, **kwargs):
        planned = original(*args, **kwargs)
        planned[-1].transform = failing
        return planned

    monkeypatch.setattr(convert, "plan", plan_with_failure)
    result = runner.invoke(
        app, ["export", str(tiny_model_dir), "--gguf", "--quant", "f16", "-o", str(tmp_path / "m.gguf")]
    )
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


CHATML = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
    "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}{% if m['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = m['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
LLAMA2 = (
    "{{ bos_token }}{% for m in messages %}{% if loop.index0 == 0 and messages[0]['role'] == 'system' %}"
    "{{ '[INST] <<SYS>>\\n' + m['content'] + '\\n<</SYS>>\\n\\n' }}{% elif m['role'] == 'user' %}"
    "{% if loop.index0 == 1 %}{{ m['content'] + ' [/INST]' }}{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% endif %}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def test_chat_template_translation() -> None:
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    chatml = chat_template.read_chat_format(CHATML, tokens)
    assert chatml.head == "" and chatml.has_system and chatml.default_system is None
    assert chatml.user == ("<|im_start|>user\n", "<|im_end|>\n")
    assert chatml.generation_prompt == "<|im_start|>assistant\n"
    assert chat_template.stop_strings(chatml, {IM_START, IM_END}, None) == [IM_START, IM_END]

    specials = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<s>"}
    llama3 = chat_template.read_chat_format(LLAMA3, tokens)
    assert llama3.head == "<s>" and llama3.wrappers["system"][1] == "<|eot_id|>"
    assert chat_template.stop_strings(llama3, specials, "<s>") == [
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    assert chat_template.end_of_turn_token(llama3, specials) == "<|eot_id|>"
    assert chat_template.go_template(llama3, drop_head=True).startswith("{{ if .System }}<|start_header_id|>system")
    assert chat_template.go_template(llama3, drop_head=False).startswith("<s>{{ if .System }}")

    gemma = chat_template.read_chat_format(GEMMA, tokens)
    assert not gemma.has_system and gemma.assistant == ("<start_of_turn>model\n", "<end_of_turn>\n")
    assert ".System" not in chat_template.go_template(gemma, drop_head=True)

    # Llama 2: the system text inside the first user turn, placed there by a .Messages template.
    llama2 = chat_template.read_chat_format(LLAMA2, tokens)
    assert llama2.system is not None and llama2.system.where == "first user turn"
    assert (llama2.system.prefix, llama2.system.suffix) == ("<<SYS>>\n", "\n<</SYS>>\n\n")
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert chat_template.render_like_ollama(llama2, messages, None) == (
        "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s>[INST] Bye [/INST]"
    )

    with pytest.raises(chat_template.NotTranslatable, match="fails on a plain"):
        chat_template.read_chat_format("{{ raise_exception('tools only') }}", tokens)


DEFAULT_SYSTEM_CHATML = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny helper.<|im_end|>\n' }}{% endif %}"
    + CHATML
)


def test_default_system_message_becomes_the_system_line(llama_bpe_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(llama_bpe_dir, model_dir)
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = DEFAULT_SYSTEM_CHATML
    config_file.write_text(json.dumps(config))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    export(model_dir, "--gguf", "--quant", "f16", "--output", tmp_path / "out" / "m.gguf")
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert 'SYSTEM """You are a tiny helper."""\n' in modelfile
    assert "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ else }}" in modelfile


def test_untranslatable_template_still_writes_the_gguf(llama_bpe_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(llama_bpe_dir, model_dir)
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    # A template that writes every message twice: no per-turn wrappers exist.
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}|{{ m['content'] }}\n{% endfor %}"
    config_file.write_text(json.dumps(config))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    gguf_path = tmp_path / "out" / "m.gguf"
    result = runner.invoke(
        app, ["export", str(model_dir), "--gguf", "--quant", "f16", "-o", str(gguf_path), "--verify"]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "has no Ollama translation" in warnings[0] and "appears 2 times" in warnings[0]
    assert "verify passed" in result.output
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert "FROM ./m.gguf\n" in modelfile and "TEMPLATE" not in modelfile


def test_cli_import_stays_light() -> None:
    code = (
        "import sys; import discopop_cli.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'gguf', 'llama_cpp', 'numpy') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
