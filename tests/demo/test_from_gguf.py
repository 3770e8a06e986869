"""The one GGUF -> transformers conversion (`demo.from_gguf`) keeps what the GGUF says, on SmolLM2-135M-Instruct.

transformers alone gives a tokenizer with `model_max_length` 1e30 and no end-of-turn in the generation config;
the converted folder must tokenize like llama.cpp reading the same GGUF, end generation where llama.cpp does, and
know the context length.
"""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
from transformers import AutoTokenizer, GenerationConfig

TEXTS = [
    "Hello! How are you today?",
    "def f(x):\n        return  x  *  2\n\n\n# done",
    "Café ☕ costs 3.50 — isn't it great?\tYes!",
]


def test_smollm2_folder_keeps_the_gguf_facts(smollm2_dir: Path, smollm2_gguf: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.model_max_length == 8192  # llama.context_length
    specials = {index: token.content for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    assert len(specials) == 17 and specials[1] == "<|im_start|>" and specials[2] == "<|im_end|>"
    generation = GenerationConfig.from_pretrained(smollm2_dir)
    # <|im_end|> (the GGUF's eos) first, then what llama.cpp also ends at: <|endoftext|> and <reponame> (FIM).
    assert generation.eos_token_id == [2, 0, 4]
    assert generation.pad_token_id == 2 and generation.bos_token_id == 1
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template

    llm = llama_cpp.Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    try:
        for text in TEXTS:
            assert tokenizer(text)["input_ids"] == llm.tokenize(text.encode(), add_bos=False, special=False), text
        for index in range(6):
            assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, index) == (index in generation.eos_token_id)
    finally:
        llm.close()
