"""The embedded tiny default model: a random-weight Gemma with a SentencePiece tokenizer trained on the spot.

It is a miniature of HuggingFaceH4/zephyr-7b-gemma-sft-v0.1 (Gemma architecture, ChatML turns): small enough to
build in a second or two on a laptop CPU, so `make demo` and the tests never need the Hugging Face Hub.

The tokenizer follows Gemma's layout: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<mask>`=4, then the ChatML turn
tokens `<|im_start|>` and `<|im_end|>` as user-defined pieces of the SentencePiece model itself, so the raw
`tokenizer.model` (which a GGUF exporter reads) and transformers' `tokenizer.json` agree that each is one piece.

    python -m discopop_cli.demo.tiny OUT_DIR [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from discopop_cli.core.errors import UserError

if TYPE_CHECKING:
    from transformers import GemmaTokenizer

CHATML_TEMPLATE = (
    "{% if messages[0]['role'] == 'user' or messages[0]['role'] == 'system' %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% elif messages[-1]['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
)
"""The alignment-handbook zephyr-7b-gemma ChatML chat template, verbatim (newlines are Jinja `\\n` escapes)."""

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML_TOKENS = (IM_START, IM_END)
# Pieces SentencePiece always emits whole: Gemma's <mask> at id 4, then the ChatML turn tokens at 5 and 6.
_USER_DEFINED = (MASK, IM_START, IM_END)

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "recipes/data/tiny-preferences.jsonl"
"""The shipped preference dataset; present in a source checkout, absent from an installed wheel."""

# Stands in for the shipped dataset when it is missing, so an installed wheel still builds the same kind of model.
_FALLBACK_CORPUS = (
    "Hello! I am doing well, thank you. How can I help you today?",
    "Of course! I would be happy to help. What do you need?",
    "You are very welcome! Have a wonderful day.",
    "Good morning! I hope you have a lovely day.",
    "What is 7 plus 5? 7 plus 5 is 12.",
    "What is 9 minus 4? 9 minus 4 is 5.",
    "What is 3 times 6? 3 times 6 is 18.",
    "Please tell me the sum of 14 and 8. The sum of 14 and 8 is 22.",
    "What is the capital of France? The capital of France is Paris.",
    "What is the capital of Japan? The capital of Japan is Tokyo.",
    "Which city is the capital of Canada? Ottawa is the capital of Canada.",
    "Tell me the capital city of Italy. The capital of Italy is Rome.",
    "What colour is the sky on a clear day? The sky on a clear day is blue.",
    "What colour is fresh grass? Fresh grass is green.",
    "What is the colour of a ripe banana? A ripe banana is yellow.",
    "What sound does a dog make? A dog says woof.",
    "What does a cat say? A cat says meow.",
    "What is the opposite of hot? The opposite of hot is cold.",
    "What day comes after Monday? The day after Monday is Tuesday.",
    "How many days are in a week? There are seven days in a week.",
    "How many legs does a spider have? A spider has eight legs.",
    "How many months are in a year? There are twelve months in a year.",
    "Which planet do we live on? We live on Earth.",
    "Where does the sun rise? The sun rises in the east.",
    "Do it yourself, it is not my job.",
    "Ugh, that is a boring question. Why would I tell you? Go away.",
    "Stop asking me silly things. Figure it out yourself.",
    "I do not care. Ask someone else. Whatever. Look it up.",
    "You are a helpful assistant. Answer briefly and politely.",
)
# Always in the training text so the role headers of the chat template get pieces of their own.
_ROLE_LINES = ("system\n", "user\n", "assistant\n")


def default_corpus(dataset: Path = DEFAULT_DATASET) -> list[str]:
    """Every message text of the shipped preference dataset, or an embedded stand-in when it is missing."""
    if not dataset.is_file():
        return list(_FALLBACK_CORPUS)
    texts: list[str] = []
    with dataset.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            for side in ("chosen", "rejected"):
                texts.extend(str(message["content"]) for message in row.get(side, []))
    return texts or list(_FALLBACK_CORPUS)


def _train_sentencepiece(corpus: Iterable[str], vocab_size: int) -> bytes:
    """Train a Gemma-style BPE SentencePiece model and return its serialized proto."""
    import sentencepiece as spm

    sentences = [text for text in corpus if text]
    if not sentences:
        raise ValueError("the tokenizer corpus is empty")
    sentences.extend(_ROLE_LINES)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        # A small corpus may run out of merges before vocab_size: keep what it has, the embedding is padded.
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        # Gemma's normalizer spec: text is taken as it is, no dummy prefix, spaces kept.
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece=PAD,
        eos_piece=EOS,
        bos_piece=BOS,
        unk_piece=UNK,
        user_defined_symbols=list(_USER_DEFINED),
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _gemma_tokenizer(model_file: Path) -> GemmaTokenizer:
    """Wrap a SentencePiece BPE model as transformers' (tokenizers-backed) Gemma tokenizer.

    transformers 5's `GemmaTokenizer` is built from a vocab dict and a merge list, not from `tokenizer.model`
    (reading that needs protobuf): the vocab is every piece at its SentencePiece id, and the merges are every
    split of a normal piece into two normal pieces, ranked by the merged piece's score, which is the order
    SentencePiece's BPE applies them in.
    """
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    size = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(size)}
    normal = {
        sp.id_to_piece(i): (sp.get_score(i), i)
        for i in range(size)
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
        and sp.id_to_piece(i) not in _USER_DEFINED
    }
    ranked: list[tuple[float, int, str, str]] = []
    for piece, (score, index) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, index, left, right))
    merges = [(left, right) for _, _, left, right in sorted(ranked)]
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        mask_token=MASK,
        extra_special_tokens=list(CHATML_TOKENS),
        add_bos_token=True,
        add_eos_token=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars (e.g. "Writing model shards") for the duration, then restore them."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    if enabled:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def build_tiny_model(
    out_dir: Path,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 1,
    head_dim: int = 16,
    vocab_size: int = 512,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a random-weight Gemma causal LM with a ChatML SentencePiece tokenizer to `out_dir`.

    The directory loads offline with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
    and also holds the raw `tokenizer.model`. Equal arguments give identical weights and tokenizer.
    """
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model_file = out_dir / "tokenizer.model"
    model_file.write_bytes(_train_sentencepiece(default_corpus() if corpus is None else corpus, vocab_size))
    tokenizer = _gemma_tokenizer(model_file)
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size={vocab_size}")
    tokenizer.save_pretrained(out_dir)

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (PAD, EOS, BOS, IM_END)}
    config = GemmaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=2048,
        pad_token_id=ids[PAD],
        eos_token_id=ids[EOS],
        bos_token_id=ids[BOS],
        tie_word_embeddings=True,
        dtype="float32",
    )
    # Seed a private RNG stream so the weights are reproducible and the caller's RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GemmaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[EOS], ids[IM_END]], pad_token_id=ids[PAD]
    )
    with _no_progress_bars():
        model.save_pretrained(out_dir)
    return out_dir


# What the demo builds write (the tiny model, SmolLM2's conversion): a folder of these alone is an earlier
# build, which --force may replace.
BUILT_FILES = frozenset(
    {
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    }
)


def build_into(out_dir: Path, *, force: bool = False, seed: int = 0) -> Path:
    """Build the tiny model beside `out_dir` and rename it into place once complete."""
    from discopop_cli.core.outputs import check_destination, staged_dir

    out_dir = Path(out_dir).absolute()
    check_destination(out_dir, force=force, what="tiny model directory", legacy_files=BUILT_FILES)
    with staged_dir(out_dir, command="demo") as staging:
        build_tiny_model(staging, seed=seed)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m discopop_cli.demo.tiny",
        description="Build the embedded tiny Gemma + ChatML model (random weights) into OUT_DIR.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--force", action="store_true", help="Replace an existing non-empty OUT_DIR.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default: 0).")
    args = parser.parse_args(argv)
    try:
        path = build_into(args.out_dir, force=args.force, seed=args.seed)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
