"""The two ways a model answers: llama.cpp for a .gguf file, transformers for a model folder.

Both render the chat with the model's own template and stop where the exported Modelfile stops: at the turn
markers the template writes (`export.chat_template.stop_strings`) and at the end-of-turn and end-of-sequence tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discopop_cli.core.errors import UserError
from discopop_cli.core.llama import load_llama, native_stderr_quiet
from discopop_cli.export import chat_template

Message = dict[str, str]


@dataclass(frozen=True)
class Sampling:
    """The model page's sampling (temperature 0.7, top-k 50, top-p 0.95) and its Modelfile's repeat_penalty 1."""

    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    max_tokens: int = 512
    seed: int | None = None


@dataclass
class Reply:
    """A streamed reply: iterate for text pieces; `finished` tells whether the model ended its turn itself."""

    pieces: Iterator[str]
    finished: bool = field(default=False)


def template_stops(template: str | None, special_tokens: dict[str, str], specials: set[str]) -> list[str]:
    """The Modelfile's stops for this template, or none when the template has no chat-format reading."""
    if not template:
        return []
    try:
        fmt = chat_template.read_chat_format(template, special_tokens)
    except chat_template.NotTranslatable:
        return []  # the engines still stop at end-of-turn and end-of-sequence tokens
    return chat_template.stop_strings(fmt, specials, special_tokens.get("bos_token"))


class GgufEngine:
    """A .gguf file in llama.cpp, rendered with the chat template stored in the file."""

    def __init__(self, path: Path, context: int) -> None:
        try:
            from llama_cpp import (
                llama_model_default_params,
                llama_model_free,
                llama_model_load_from_file,
                llama_model_n_ctx_train,
            )
        except ImportError:
            from discopop_cli.export.quants import INSTALL_HINT

            raise UserError(f"chatting with a .gguf file needs llama-cpp-python; run: {INSTALL_HINT}") from None

        # A context longer than the model was trained for makes llama.cpp warn on every start: cap it there.
        params = llama_model_default_params()
        params.vocab_only = True
        with native_stderr_quiet():
            probe = llama_model_load_from_file(str(path).encode(), params)
            if probe is None:
                raise UserError(f"{path} is not a GGUF llama.cpp can read; export it again with discopop export --gguf")
            trained = llama_model_n_ctx_train(probe)
            llama_model_free(probe)
        self.llm = load_llama(path, n_ctx=min(context, trained) if context else 0)
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self.stops = template_stops(self.template, *self._special_tokens())

    def _special_tokens(self) -> tuple[dict[str, str], set[str]]:
        """bos/eos texts and the control tokens (never whitespace or other user-defined tokens, which answers hold)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        specials = {
            llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace")
            for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
            if llama_cpp.llama_vocab_get_attr(vocab, i) & control
        }
        named = {}
        for key, token_id in (("bos_token", self.llm.token_bos()), ("eos_token", self.llm.token_eos())):
            if token_id >= 0:
                named[key] = llama_cpp.llama_vocab_get_text(vocab, token_id).decode("utf-8", "replace")
        return named, specials

    def reply(self, messages: list[Message], sampling: Sampling) -> Reply:
        kwargs: dict[str, Any] = {
            "temperature": sampling.temperature,
            "top_k": sampling.top_k if sampling.temperature > 0 else 1,
            "top_p": sampling.top_p,
            "repeat_penalty": sampling.repeat_penalty,
            "max_tokens": sampling.max_tokens,
            "stop": self.stops or None,
            "stream": True,
        }
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if self.template:
            chunks = self.llm.create_chat_completion(messages=messages, **kwargs)
            text_of = lambda chunk: chunk["choices"][0]["delta"].get("content") or ""  # noqa: E731
        else:  # no template: the prompt goes to the model verbatim, as the Modelfile's `{{ .Prompt }}` sends it
            chunks = self.llm.create_completion(messages[-1]["content"], **kwargs)
            text_of = lambda chunk: chunk["choices"][0]["text"] or ""  # noqa: E731
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            for chunk in chunks:
                text = text_of(chunk)
                if text:
                    yield text
                if chunk["choices"][0].get("finish_reason") is not None:
                    reply.finished = chunk["choices"][0]["finish_reason"] == "stop"

        reply.pieces = pieces()
        return reply

    def close(self) -> None:
        self.llm.close()


class TransformersEngine:
    """A model folder in transformers (safetensors only), on the GPU when there is one."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True).to(self.device)
        self.model.eval()
        self.template = self.tokenizer.chat_template
        named = {
            key: value
            for key, value in (("bos_token", self.tokenizer.bos_token), ("eos_token", self.tokenizer.eos_token))
            if value
        }
        specials = {token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special}
        self.stops = template_stops(self.template, named, specials | set(self.tokenizer.all_special_tokens))
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    def reply(self, messages: list[Message], sampling: Sampling) -> Reply:
        from threading import Thread

        from transformers import TextIteratorStreamer

        if self.template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            ids = self.tokenizer(messages[-1]["content"], return_tensors="pt").input_ids
        ids = ids.to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = sampling.temperature > 0
        if sampling.seed is not None:
            self.torch.manual_seed(sampling.seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": sample,
            "repetition_penalty": sampling.repeat_penalty,
            "eos_token_id": sorted(self.eos_ids) or None,
            "pad_token_id": self.tokenizer.pad_token_id or next(iter(self.eos_ids), None),
            "streamer": streamer,
        }
        if sample:
            kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if self.stops:
            kwargs.update(stop_strings=self.stops, tokenizer=self.tokenizer)
        result: dict[str, Any] = {}

        def generate() -> None:
            with self.torch.no_grad():
                result["ids"] = self.model.generate(ids, **kwargs)

        worker = Thread(target=generate, daemon=True)
        worker.start()
        reply = Reply(iter(()))

        def pieces() -> Iterator[str]:
            text = ""
            for piece in streamer:
                text += piece
                # stop_strings ends generation once a stop is produced; it is not part of the answer.
                cut = min((text.find(stop) for stop in self.stops if stop in text), default=-1)
                if cut >= 0:
                    yield piece[: len(piece) - (len(text) - cut)]
                    break
                yield piece
            worker.join()
            new = result["ids"][0, ids.shape[1] :].tolist()
            reply.finished = len(new) < sampling.max_tokens or bool(new and new[-1] in self.eos_ids)

        reply.pieces = pieces()
        return reply

    def close(self) -> None:
        pass


def open_engine(model: Path, context: int) -> GgufEngine | TransformersEngine:
    """The engine for MODEL, checked before anything loads."""
    if model.suffix == ".gguf":
        if not model.is_file():
            raise UserError(f"{model} is not a file; give an exported .gguf file or a model folder")
        return GgufEngine(model, context)
    if not model.is_dir():
        raise UserError(f"{model} is neither a .gguf file nor a model folder; give one of them")
    if not (model / "config.json").is_file():
        raise UserError(
            f"{model} has no config.json; give a model folder (as sft, align or merge write) or a .gguf file"
        )
    if not any(model.glob("*.safetensors")):
        raise UserError(
            f"{model} has no .safetensors weights (pickled weights are never loaded); convert the model first"
        )
    return TransformersEngine(model)
