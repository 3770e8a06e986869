"""One conversion from a GGUF file to a transformers model folder, for the demos, the tests and the benchmarks.

transformers reads a GGUF (`gguf_file=`), de-quantizing its weights to float32, but what it builds loses part of
what the file says, and a folder saved from it as it is would differ from the GGUF in ways a user notices:

- the tokenizer's `model_max_length` is 1e30 instead of the GGUF's context length;
- user-defined pieces that the vocabulary also holds as ordinary pieces are no longer matched whole (Gemma's runs
  of 2 to 31 spaces: a line indented by 32 spaces tokenizes differently from llama.cpp's);
- the generation config ends generation only at eos, where llama.cpp also ends it at the end-of-turn tokens
  (Gemma 3's `<end_of_turn>`, SmolLM2's `<|im_end|>` is its eos already);
- a model loaded from a GGUF refuses `save_pretrained` (it carries a gguf quantizer).

`gguf_to_transformers` puts all of that back: every control and user-defined token of the GGUF is an added token
of the tokenizer (special, or matched whole on normalized text), `model_max_length` is the GGUF's context length,
the generation config's eos ids are the tokens llama.cpp ends generation at, and the weights are saved as plain
float32 safetensors with the config, tokenizer and chat template (when the GGUF has one).

    python -m discopop_cli.demo.from_gguf FILE.gguf OUT_DIR [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError

CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType values


@dataclass(frozen=True)
class GgufFacts:
    """What the conversion keeps from a GGUF's metadata."""

    context_length: int | None
    pre_tokenizer: str | None  # tokenizer.ggml.pre
    token_types: list[int]
    end_of_generation: list[int]  # the ids llama.cpp ends generation at, eos first
    bos: int | None
    pad: int | None


@contextmanager
def _one_reader(gguf_path: Path) -> Iterator[Any]:
    """One parse of the GGUF's metadata for the whole conversion.

    transformers builds a `gguf.GGUFReader` for the tokenizer and two more for the model, and each parses every
    field again: for Gemma 3's 262,144-token vocabulary that is 8 to 20 s each on 2 cores. Within this block they
    all get the one reader made here (the file is memory-mapped read-only, so sharing it is safe).
    """
    import gguf

    original = gguf.GGUFReader
    reader = original(gguf_path)

    def shared(path: object, *args: Any, **kwargs: Any) -> Any:
        return reader if Path(str(path)).resolve() == gguf_path.resolve() else original(path, *args, **kwargs)

    gguf.GGUFReader = shared
    try:
        yield reader
    finally:
        gguf.GGUFReader = original


@contextmanager
def _llama_vocabulary(gguf_path: Path) -> Iterator[Any]:
    """llama.cpp's own reading of the GGUF's vocabulary (no weights loaded): the reference the folder must match."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(gguf_path), params=params, verbose=False)
    try:
        yield model
    finally:
        model.close()


def read_facts(reader: Any, llama_vocab: Any) -> GgufFacts:
    """Context length and token types from the metadata; the end-of-generation ids from llama.cpp's own vocabulary."""
    import llama_cpp

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    context = value(f"{value('general.architecture')}.context_length")
    types = [int(kind) for kind in value("tokenizer.ggml.token_type") or []]
    eos = value("tokenizer.ggml.eos_token_id")
    ends = [index for index in range(len(types)) if llama_cpp.llama_vocab_is_eog(llama_vocab.vocab, index)]
    ends.sort(key=lambda index: index != eos)
    bos, pad = value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.padding_token_id")
    return GgufFacts(
        context_length=int(context) if isinstance(context, int) else None,
        pre_tokenizer=value("tokenizer.ggml.pre"),
        token_types=types,
        end_of_generation=ends,
        bos=bos if isinstance(bos, int) else None,
        pad=pad if isinstance(pad, int) else None,
    )


def _keep_added_tokens(folder: Path, token_types: list[int]) -> int:
    """Make every control and user-defined token of the GGUF an added token of the saved tokenizer.json.

    A missing one is a piece the vocabulary holds as an ordinary token too; as an added token on normalized text it
    is matched whole, as llama.cpp matches a user-defined token. Returns how many were added.
    """
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    by_id = {index: piece for piece, index in vocab.items()} if isinstance(vocab, dict) else dict(enumerate(vocab))
    present = {int(token["id"]) for token in data["added_tokens"]}
    missing = [
        index for index, kind in enumerate(token_types) if kind in (CONTROL, USER_DEFINED) and index not in present
    ]
    for index in missing:
        piece = by_id[index] if isinstance(by_id[index], str) else by_id[index][0]
        data["added_tokens"].append(
            {
                "id": index,
                "content": piece,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": token_types[index] == USER_DEFINED,
                "special": token_types[index] == CONTROL,
            }
        )
    if missing:
        data["added_tokens"].sort(key=lambda token: token["id"])
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return len(missing)


def _smollm_pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


_PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {"smollm": _smollm_pre_tokenizer}
"""llama.cpp pre-tokenizers (`tokenizer.ggml.pre`) that transformers' GGUF reader does not rebuild: SmolLM's splits
digits one by one before GPT-2's rule, so without it "  2" becomes two tokens instead of llama.cpp's one."""

PROBE_TEXT = (
    "Hello! How are you today?\nfor i in range(10):\n        total  +=  i * 2.5\n\n\n"
    "Café ☕ costs 3.50 — isn't it great?\tYes!   Three spaces,\r\n and 12345 digits. 日本語のテキスト"
)
"""Text the folder's tokenizer must split exactly as llama.cpp splits it with the GGUF's vocabulary."""


def _check_tokenization(folder: Path, llama_vocab: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    theirs = llama_vocab.tokenize(PROBE_TEXT.encode(), add_bos=False, special=False)
    if ours != theirs:
        at = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
        )
        raise RuntimeError(
            f"the converted tokenizer splits text unlike llama.cpp from token {at}: "
            f"{tokenizer.convert_ids_to_tokens(ours[at : at + 4])} vs {tokenizer.convert_ids_to_tokens(theirs[at : at + 4])}"
        )


def _plain_model(gguf_path: Path) -> Any:
    """The GGUF's weights, de-quantized to float32, in a model that save_pretrained accepts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from discopop_cli.core.devices import tell_deepspeed_when_cpu_only

    tell_deepspeed_when_cpu_only()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    settings = {key: value for key, value in loaded.config.to_dict().items() if key != "quantization_config"}
    config = AutoConfig.for_model(**settings)
    # Built on the meta device and handed the loaded tensors: no second copy of the weights in memory.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    return model


def gguf_to_transformers(gguf_path: Path, out_dir: Path) -> Path:
    """Write the GGUF's model as a transformers folder (float32 safetensors, config, generation config, tokenizer)."""
    from transformers.utils import logging

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise UserError(f"{gguf_path} does not exist; pass a .gguf file")
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # transformers' de-quantizing and shard-writing bars
    try:
        return _convert(gguf_path, out_dir)
    finally:
        if bars:
            logging.enable_progress_bar()


def _convert(gguf_path: Path, out_dir: Path) -> Path:
    from transformers import AutoTokenizer, GenerationConfig

    with _one_reader(gguf_path) as reader, _llama_vocabulary(gguf_path) as llama_vocab:
        facts = read_facts(reader, llama_vocab)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = _plain_model(gguf_path)
        if facts.context_length:
            tokenizer.model_max_length = facts.context_length
        if facts.pre_tokenizer in _PRE_TOKENIZERS:
            tokenizer.backend_tokenizer.pre_tokenizer = _PRE_TOKENIZERS[facts.pre_tokenizer]()
        model.generation_config = GenerationConfig(
            bos_token_id=facts.bos,
            eos_token_id=facts.end_of_generation[0] if len(facts.end_of_generation) == 1 else facts.end_of_generation,
            pad_token_id=facts.pad,
        )
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        _keep_added_tokens(out_dir, facts.token_types)
        _check_tokenization(out_dir, llama_vocab)
    return out_dir


def write_folder(gguf_path: Path, out_dir: Path, *, force: bool = False) -> Path:
    """Convert beside `out_dir` and rename the folder into place once complete."""
    from discopop_cli.core.outputs import check_destination, staged_dir
    from discopop_cli.demo.tiny import BUILT_FILES

    out_dir = Path(out_dir).absolute()
    check_destination(out_dir, force=force, what="model directory", legacy_files=BUILT_FILES)
    with staged_dir(out_dir, command="demo") as staging:
        gguf_to_transformers(gguf_path, staging)
    return out_dir


def main_for(find_gguf: Callable[[], Path] | None, prog: str, description: str, argv: list[str] | None) -> int:
    """The command line of a converter: `find_gguf` names a shipped model's file; None takes a GGUF argument."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if find_gguf is None:
        parser.add_argument("gguf", type=Path, metavar="FILE.gguf")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--force", action="store_true", help="Replace an existing non-empty OUT_DIR.")
    args = parser.parse_args(argv)
    try:
        gguf_path = args.gguf if find_gguf is None else find_gguf()
        path = write_folder(gguf_path, args.out_dir, force=args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_for(
        None, "python -m discopop_cli.demo.from_gguf", "Write a GGUF's model as a transformers folder.", argv
    )


if __name__ == "__main__":
    sys.exit(main())
