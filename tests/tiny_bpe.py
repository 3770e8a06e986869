"""A tiny random-weight llama, mistral or qwen2 model with a byte-level BPE vocabulary, trained on the spot: the
export and chat tests' model of the Llama 3 / Qwen2 / SmolLM family."""

from __future__ import annotations

from pathlib import Path

from discopop_cli.demo.tiny import CHATML_TEMPLATE, default_corpus

LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BEGIN, END, IM_START, IM_END = "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"


QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


def build_tiny_bpe_model(out_dir: Path, model_type: str = "llama", **overrides: object) -> Path:
    """A random-weight llama, mistral or qwen2 model with a freshly trained byte-level BPE vocabulary.

    The llama one has grouped-query attention, an untied head and Llama 3's RoPE base; the qwen2 one a tied head,
    Qwen2's digit-by-digit split rule and random (not zero) q/k/v biases, so every conversion path is exercised.
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(ignore_merges=True))  # as Llama 3's tokenizer.json
    split = QWEN2_SPLIT if model_type == "qwen2" else LLAMA3_SPLIT
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=[BEGIN, END, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*default_corpus(), "system\n", "user\n", "assistant\n"], trainer)
    ids = {token: bpe.token_to_id(token) for token in (BEGIN, END, IM_START, IM_END)}
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN} $A", pair=f"{BEGIN} $A {BEGIN} $B", special_tokens=[(BEGIN, ids[BEGIN])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BEGIN, eos_token=END, pad_token=END, extra_special_tokens=[IM_START, IM_END]
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    settings: dict[str, object] = {
        "vocab_size": 768,  # more rows than tokens: the GGUF vocabulary is padded to match
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "rope_theta": 500000.0,
        "tie_word_embeddings": model_type == "qwen2",
        "bos_token_id": ids[BEGIN],
        "eos_token_id": ids[END],
        "pad_token_id": ids[END],
    }
    settings.update(overrides)
    config = AutoConfig.for_model(model_type, **{key: value for key, value in settings.items() if value is not None})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).float()
        for name, parameter in model.named_parameters():
            if name.endswith("proj.bias"):
                torch.nn.init.normal_(parameter, std=0.5)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BEGIN], eos_token_id=[ids[END], ids[IM_END]], pad_token_id=ids[END]
    )
    model.save_pretrained(out_dir)
    return out_dir
