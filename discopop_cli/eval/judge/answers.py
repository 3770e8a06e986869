"""Answers to the prompt set: a model folder through transformers `generate`, a GGUF file through llama.cpp.

The sampling defaults are the seed model page's (DiscoPOP-zephyr-7b-gemma): temperature 0.7, top-k 50, top-p
0.95, 128 new tokens, no repetition penalty, stopping at ChatML's turn markers. Each prompt gets its own seed,
derived from `--seed` and the prompt's id, so a resumed run writes the answers an uninterrupted one would have
(up to the nondeterminism of the backend's kernels).

An MT-Bench question has two turns: the second is asked in the same conversation, after the model's own first
answer, and each question is answered at the temperature MT-Bench gives its category (FastChat's
`temperature_config`: 0 for math, coding, reasoning and extraction, 0.1 for STEM and humanities, 0.7 otherwise).
A question's answer is recorded once both turns are made, so an interrupted question is asked again whole.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from discopop_cli.core.errors import UserError, first_line
from discopop_cli.core.llama import load_llama

STOP = ["<|im_start|>", "<|im_end|>"]
MAX_NEW_TOKENS = 128
DEFAULT_TEMPERATURE = 0.7  # FastChat's, for a category its temperature_config does not list
LLAMA_HINT = 'pip install "discopop-cli[gguf]"'


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int | None = MAX_NEW_TOKENS  # None: the protocol's default (MT-Bench: FastChat's 1024)
    seed: int = 42

    def check(self) -> None:
        if self.temperature < 0:
            raise UserError(f"--temperature {self.temperature}: must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: must be above 0 and at most 1")
        if self.top_k < 0:
            raise UserError(f"--top-k {self.top_k}: must be 0 (off) or more")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path

    @property
    def is_outputs(self) -> bool:
        """Answers made elsewhere, in an AlpacaEval model_outputs.json: read, not generated."""
        return self.path.is_file() and self.path.suffix.lower() == ".json"

    @property
    def is_gguf(self) -> bool:
        return self.path.is_file() and not self.is_outputs


def parse_models(spec: str) -> list[ModelSource]:
    """`A,B,...` into checked model sources named after their folder or file, before anything is loaded."""
    paths = [part.strip() for part in spec.split(",") if part.strip()]
    if len(paths) < 2:
        raise UserError(f"--models {spec!r}: give at least two, comma-separated (model folders or .gguf files)")
    sources: list[ModelSource] = []
    for raw in paths:
        path = Path(raw)
        _check_model(raw, path)
        name = path.stem if path.is_file() else path.resolve().name
        if path.suffix.lower() == ".json":
            from discopop_cli.eval.judge.alpaca import OutputsFile

            name = OutputsFile(path).generator or name
        taken = {s.name for s in sources}
        if any(s.path.resolve() == path.resolve() for s in sources):
            raise UserError(f"--models lists {raw} twice; each model once")
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        sources.append(ModelSource(name, path))
    return sources


def _check_model(raw: str, path: Path) -> None:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--models: {raw} has no config.json; give a saved transformers model folder or a .gguf")
        from discopop_cli.core.weights import read_folder, safetensors_files

        if not safetensors_files(path):
            pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
            found = (
                f"pickled weights only ({', '.join(pickled)}), and unpickling can run code" if pickled else "no weights"
            )
            raise UserError(
                f"--models: {raw} has {found}; give a folder with safetensors weights "
                "(from_pretrained, then save_pretrained(safe_serialization=True))"
            )
        read_folder(path)  # headers only: a damaged weights file is refused before anything is written
        return
    if not path.is_file():
        raise UserError(f"--models: {raw} does not exist; give a model folder or a .gguf file")
    if path.suffix.lower() == ".json":
        from discopop_cli.eval.judge.alpaca import OutputsFile

        OutputsFile(path)  # read now: a broken file is reported before any model is loaded
        return
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise UserError(f"--models: {raw} is not a GGUF file; give a model folder or a .gguf file")


def llama_threads() -> dict[str, int]:
    """llama.cpp's default runs prompts on every logical CPU and decoding on half of them. Its threads spin while
    they wait, so on a machine shared with other work the extra prompt threads slowed a 135M judge's prompts
    fourfold here (2 cores, load 8); on an idle machine the logical CPUs past the physical ones add little."""
    threads = max(1, (os.cpu_count() or 2) // 2)
    return {"n_threads": threads, "n_threads_batch": threads}


def prompt_seed(seed: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


Messages = list[dict[str, str]]


class Generator(Protocol):
    def generate(self, messages: Messages, seed: int, temperature: float | None = None) -> tuple[str, int]: ...

    def close(self) -> None: ...


class LlamaCppGenerator:
    """One chat turn at a time through llama-cpp-python, with the chat template stored in the GGUF."""

    def __init__(self, path: Path, sampling: Sampling, n_ctx: int = 4096) -> None:
        self.sampling = sampling
        try:
            self.llm = load_llama(path, n_ctx=n_ctx, **llama_threads())
        except ImportError:
            raise UserError(f"answering with a GGUF model needs llama-cpp-python; run: {LLAMA_HINT}") from None
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"llama.cpp could not load {path} ({first_line(exc)}); check the file") from None

    def generate(self, messages: Messages, seed: int, temperature: float | None = None) -> tuple[str, int]:
        s = self.sampling
        reply = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            temperature=s.temperature if temperature is None else temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            repeat_penalty=1.0,
            max_tokens=s.max_new_tokens,
            seed=seed,
            stop=STOP,
        )
        content = str(reply["choices"][0]["message"]["content"] or "")
        return content.strip(), int(reply["usage"]["completion_tokens"])

    def close(self) -> None:
        self.llm.close()


class TransformersGenerator:
    """`model.generate` with the tokenizer's chat template, on the GPU when there is one."""

    def __init__(self, path: Path, sampling: Sampling) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()  # the run prints its own progress; a loading bar would break the lines
        self.torch = torch
        self.sampling = sampling
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"transformers could not load {path} ({first_line(exc)}); check the folder") from None
        if not self.tokenizer.chat_template:
            raise UserError(f"{path} has no chat template in its tokenizer; answer with a chat model")

    def generate(self, messages: Messages, seed: int, temperature: float | None = None) -> tuple[str, int]:
        s, tok, torch = self.sampling, self.tokenizer, self.torch
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        batch = tok(rendered, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        torch.manual_seed(seed)
        temperature = s.temperature if temperature is None else temperature
        sample = temperature > 0
        extra: dict[str, Any] = {"temperature": temperature, "top_k": s.top_k, "top_p": s.top_p} if sample else {}
        with torch.no_grad():
            output = self.model.generate(
                **batch,
                do_sample=sample,
                max_new_tokens=s.max_new_tokens,
                repetition_penalty=1.0,
                stop_strings=STOP,
                tokenizer=tok,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                **extra,
            )
        new = output[0, batch["input_ids"].shape[1] :]
        answer = tok.decode(new, skip_special_tokens=True)
        for stop in STOP:
            answer = answer.split(stop)[0]
        return answer.strip(), int(new.shape[0])

    def close(self) -> None:
        del self.model


def open_generator(source: ModelSource, sampling: Sampling) -> Generator:
    if source.is_outputs:
        from discopop_cli.eval.judge.alpaca import OutputsFile

        return OutputsFile(source.path)
    if source.is_gguf:
        return LlamaCppGenerator(source.path, sampling)
    return TransformersGenerator(source.path, sampling)


def answer_all(
    source: ModelSource,
    prompts: list[Any],
    sampling: Sampling,
    cache: Any,
    on_answer: Callable[[int, int], None] | None = None,
    temperatures: dict[str, float] | None = None,
) -> int:
    """Answer every prompt not yet in `cache` (loading the model only if one is missing); the number answered.
    With `temperatures` (MT-Bench's, by category), a category's temperature replaces the sampling's."""
    missing = [p for p in prompts if p.id not in cache.done]
    if not missing:
        return 0
    generator = open_generator(source, sampling)
    try:
        for i, prompt in enumerate(missing, start=1):
            started = time.monotonic()
            temperature = None if temperatures is None else temperatures.get(prompt.category, DEFAULT_TEMPERATURE)
            messages: Messages = []
            answers, tokens = [], 0
            for turn, question in enumerate(prompt.all_turns, start=1):
                messages.append({"role": "user", "content": question})
                seed = prompt_seed(sampling.seed, prompt.id if turn == 1 else f"{prompt.id}:{turn}")
                text, used = generator.generate(messages, seed, temperature)
                messages.append({"role": "assistant", "content": text})
                answers.append(text)
                tokens += used
            record: dict[str, Any] = {"key": prompt.id, "category": prompt.category, "answer": answers[0]}
            if prompt.turns:
                record["turns"] = answers
            if temperature is not None:
                record["temperature"] = temperature
            record["tokens"] = tokens
            cache.append({**record, "seconds": round(time.monotonic() - started, 3)})
            if on_answer is not None:
                on_answer(i, len(missing))
    finally:
        generator.close()
    return len(missing)
