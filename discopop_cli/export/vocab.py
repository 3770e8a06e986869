"""Tokenizer metadata for GGUF, read from the model's own tokenizer files (no transformers import).

Two vocabulary kinds, the two llama.cpp tokenizers the supported models use:

- `llama` (SentencePiece-style BPE: pieces with `▁` for spaces, `<0xNN>` byte fallback, merges ranked by score).
  Tokens, scores and types come from `tokenizer.model` when it is there, as SentencePiece defines them; a model
  saved by transformers 5 often has only `tokenizer.json`, and then each piece's score is minus the rank of the
  first merge that makes it, which orders llama.cpp's score-driven merging exactly like the ranked merge list.
- `gpt2` (byte-level BPE: Llama 3, Qwen2, SmolLM): tokens and merges from `tokenizer.json`, plus the name of the
  pre-tokenizer (`tokenizer.ggml.pre`) recognised from its split rules, because llama.cpp re-implements each
  known pre-tokenizer by name rather than reading the regex.

Added tokens keep the ids transformers gives them: special ones become CONTROL tokens (llama.cpp then matches them
whole when it parses special tokens, as transformers does), the others USER_DEFINED.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.json_files import read_json

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType values

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_NO_MERGE_SCORE = -1e9  # a piece no merge makes: SentencePiece-style merging should reach it last, if at all
_PADDING_SCORE = -1000.0

# Split rules of the byte-level pre-tokenizers llama.cpp knows by name (the regexes are the models' published ones).
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK3_SPLITS = (
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"[!"  # $%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
)
# Isolated Split rules (in order) before a regex-free ByteLevel step -> llama.cpp's pre-tokenizer name.
_SPLIT_FAMILIES = {
    (_LLAMA3_SPLIT,): "llama-bpe",
    (_QWEN2_SPLIT,): "qwen2",
    (_QWEN35_SPLIT,): "qwen35",
    _DEEPSEEK3_SPLITS: "deepseek-v3",
}
KNOWN_PRE_TOKENIZERS = ("llama-bpe", "qwen2", "qwen35", "deepseek-v3", "gpt-2", "smollm (starcoder's too)", "falcon")


@dataclass
class Vocabulary:
    model: str  # tokenizer.ggml.model: "llama" or "gpt2"
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, eot
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None

    def token_id(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None

    def special_texts(self) -> set[str]:
        return {token for token, kind in zip(self.tokens, self.token_types, strict=True) if kind == CONTROL}

    def add_to(self, writer: Any) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        adders = {
            "bos": writer.add_bos_token_id,
            "eos": writer.add_eos_token_id,
            "unk": writer.add_unk_token_id,
            "pad": writer.add_pad_token_id,
            "eot": writer.add_eot_token_id,
        }
        for kind, token_id in self.special_ids.items():
            adders[kind](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or an AddedToken-like dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_chat_template(model_dir: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """tokenizer_config.json's chat_template (the default one of a list), or transformers 5's chat_template.jinja."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return template or None


def _added_tokens(tokenizer_json: dict[str, Any], tokenizer_config: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """(id, content, special) of every added token.

    A user-defined token matched on normalized text (`normalized: true`) under a normalizer that writes spaces as
    `▁` (Gemma's runs of spaces, "▁▁" ...) matches raw spaces; llama.cpp matches user-defined tokens on raw text, so
    its GGUF text has the spaces back, as llama.cpp's own converter writes it.
    """
    spaces_as_metaspace = '"content": "\u2581"' in json.dumps(tokenizer_json.get("normalizer"), ensure_ascii=False)
    if tokenizer_json.get("added_tokens"):
        found = []
        for token in tokenizer_json["added_tokens"]:
            content, special = token["content"], bool(token.get("special"))
            if spaces_as_metaspace and token.get("normalized") and not special:
                content = content.replace("\u2581", " ")
            found.append((int(token["id"]), content, special))
        return found
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    return [(int(i), t["content"], bool(t.get("special"))) for i, t in decoder.items()]


def _merge_pair(merge: str | list[str]) -> tuple[str, str]:
    if isinstance(merge, str):
        left, _, right = merge.partition(" ")
        return left, right
    return merge[0], merge[1]


def _is_byte_level(tokenizer_json: dict[str, Any]) -> bool:
    return "ByteLevel" in json.dumps(tokenizer_json.get("pre_tokenizer")) + json.dumps(tokenizer_json.get("decoder"))


def _flat_pre_tokenizers(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [leaf for child in node["pretokenizers"] for leaf in _flat_pre_tokenizers(child)]
    return [node]


def detect_pre_tokenizer(tokenizer_json: dict[str, Any], model_dir: object) -> str:
    """llama.cpp's name for the byte-level pre-tokenizer of this tokenizer.json, recognised by its split rules."""
    steps = _flat_pre_tokenizers(tokenizer_json.get("pre_tokenizer"))
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        splits = steps[:-1]
        if splits and kinds[:-1] == ["Split"] * len(splits) and not byte_level.get("use_regex", True):
            rules = tuple((step.get("pattern") or {}).get("Regex") for step in splits)
            if all(step.get("behavior") == "Isolated" for step in splits) and rules in _SPLIT_FAMILIES:
                return _SPLIT_FAMILIES[rules]
            unknown = " then ".join(str(rule) for rule in rules)
            raise UserError(
                f"the pre-tokenizer split rule of {model_dir} ({unknown[:120]}) is not one the exporter maps to "
                f"llama.cpp ({', '.join(KNOWN_PRE_TOKENIZERS)}); its GGUF would tokenize differently"
            )
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return "gpt-2"
        # Digits one by one, then GPT-2's rule: StarCoder's and SmolLM's, which llama.cpp splits alike.
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get("use_regex", True):
            return "smollm"
    if kinds == ["Punctuation", "ByteLevel", "Digits", "Split"] and byte_level is None:
        three_digits = (steps[3].get("pattern") or {}).get("Regex") == "[0-9][0-9][0-9]"
        if three_digits and steps[1].get("use_regex", True) and not steps[2].get("individual_digits"):
            return "falcon"
    raise UserError(
        f"the byte-level pre-tokenizer of {model_dir} ({' + '.join(map(str, kinds)) or 'none'}) is not one the "
        f"exporter maps to llama.cpp ({', '.join(KNOWN_PRE_TOKENIZERS)}); its GGUF would tokenize differently"
    )


def _sentencepiece_pieces(model_file: Path) -> tuple[list[str], list[float], list[int]]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    tokens, scores, types = [], [], []
    for index in range(processor.get_piece_size()):
        tokens.append(processor.id_to_piece(index))
        scores.append(float(processor.get_score(index)))
        if processor.is_unknown(index):
            types.append(UNKNOWN)
        elif processor.is_control(index):
            types.append(CONTROL)
        elif processor.is_unused(index):
            types.append(UNUSED)
        elif processor.is_byte(index):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    return tokens, scores, types


def _pieces_from_json(model: dict[str, Any], spm_style: bool) -> tuple[list[str], list[float] | None, list[int]]:
    by_id = {int(index): piece for piece, index in model["vocab"].items()}
    size = max(by_id) + 1 if by_id else 0
    tokens = [by_id.get(index, f"[PAD{index}]") for index in range(size)]
    types = [NORMAL if index in by_id else UNUSED for index in range(size)]
    if not spm_style:
        return tokens, None, types
    first_rank: dict[str, int] = {}
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = _merge_pair(merge)
        first_rank.setdefault(left + right, rank)
    scores = [-float(first_rank[piece]) if piece in first_rank else _NO_MERGE_SCORE for piece in tokens]
    for index, piece in enumerate(tokens):
        if _BYTE_PIECE.fullmatch(piece):
            types[index] = BYTE
        elif piece == model.get("unk_token"):
            types[index] = UNKNOWN
    return tokens, scores, types


def _adds_space_prefix(tokenizer_json: dict[str, Any], gemma: bool) -> bool:
    if not tokenizer_json:
        return not gemma
    normalizer = json.dumps(tokenizer_json.get("normalizer"))
    if '"Prepend"' in normalizer:
        return True
    for step in _flat_pre_tokenizers(tokenizer_json.get("pre_tokenizer")):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never") != "never"
    return False


def _bos_eos_added(model_dir: Path, bos: int | None, eos: int | None) -> tuple[bool, bool]:
    """Whether the tokenizer wraps plain text in bos/eos, as tokenizer.json's post-processor does it."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    plain = tokenizer.encode("Hello", add_special_tokens=False).ids
    wrapped = tokenizer.encode("Hello", add_special_tokens=True).ids
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return bos in wrapped[:start], eos in wrapped[start + len(plain) :]
    return False, False


def load_vocabulary(model_dir: Path, config: dict[str, Any], *, gemma: bool) -> Vocabulary:
    """Everything llama.cpp needs to tokenize like transformers, padded to the embedding's row count."""
    tokenizer_json = read_json(model_dir / "tokenizer.json", "model", missing_ok=True)
    tokenizer_config = {
        **read_json(model_dir / "special_tokens_map.json", "model", missing_ok=True),
        **read_json(model_dir / "tokenizer_config.json", "model", missing_ok=True),
    }
    model = tokenizer_json.get("model") or {}
    sp_file = model_dir / "tokenizer.model"

    scores: list[float] | None
    if tokenizer_json and model.get("type") == "BPE" and _is_byte_level(tokenizer_json):
        kind, pre = "gpt2", detect_pre_tokenizer(tokenizer_json, model_dir)
        tokens, scores, types = _pieces_from_json(model, spm_style=False)
        merges: list[str] | None = [" ".join(_merge_pair(m)) for m in model.get("merges") or []]
    elif sp_file.is_file():
        kind, pre, merges = "llama", "default", None
        tokens, scores, types = _sentencepiece_pieces(sp_file)
    elif tokenizer_json and model.get("type") == "BPE":
        kind, pre, merges = "llama", "default", None
        tokens, scores, types = _pieces_from_json(model, spm_style=True)
    else:
        found = model.get("type") or "no tokenizer.json or tokenizer.model"
        raise UserError(f"{model_dir}: tokenizer {found} is not supported (SentencePiece BPE or byte-level BPE only)")

    unk_text = _content(tokenizer_config.get("unk_token")) or model.get("unk_token")
    for index, content, special in _added_tokens(tokenizer_json, tokenizer_config):
        while index >= len(tokens):
            tokens.append(f"[PAD{len(tokens)}]")
            types.append(UNUSED)
            if scores is not None:
                scores.append(_PADDING_SCORE)
        tokens[index] = content
        types[index] = UNKNOWN if content == unk_text else CONTROL if special else USER_DEFINED
        if scores is not None:
            scores[index] = 0.0

    vocab_size = int(config.get("vocab_size") or len(tokens))
    if len(tokens) > vocab_size:
        raise UserError(f"the tokenizer has {len(tokens)} tokens but the model's embedding only {vocab_size} rows")
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(UNUSED)
        if scores is not None:
            scores.append(_PADDING_SCORE)
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in seen:
            raise UserError(
                f"token {token!r} appears twice (ids {seen[token]} and {index}); llama.cpp needs unique tokens"
            )
        seen[token] = index

    special_ids: dict[str, int] = {}
    for kind_name in ("bos", "eos", "unk", "pad"):
        text = _content(tokenizer_config.get(f"{kind_name}_token"))
        token_id = seen.get(text) if text else None
        if token_id is None:
            from_config = config.get(f"{kind_name}_token_id")
            token_id = from_config[0] if isinstance(from_config, list) and from_config else from_config
        if isinstance(token_id, int):
            special_ids[kind_name] = token_id

    if (model_dir / "tokenizer.json").is_file():
        add_bos, add_eos = _bos_eos_added(model_dir, special_ids.get("bos"), special_ids.get("eos"))
    else:
        add_bos, add_eos = kind == "llama", False
    add_bos = bool(tokenizer_config.get("add_bos_token", add_bos))
    add_eos = bool(tokenizer_config.get("add_eos_token", add_eos))

    return Vocabulary(
        model=kind,
        pre=pre,
        tokens=tokens,
        token_types=types,
        scores=scores,
        merges=merges,
        special_ids=special_ids,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=_adds_space_prefix(tokenizer_json, gemma) if kind == "llama" else None,
        chat_template=read_chat_template(model_dir, tokenizer_config),
    )
