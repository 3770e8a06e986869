"""`--verify`: the exported GGUF run by llama.cpp against the source model run by transformers.

On a few chat prompts (a system turn, multi-turn histories, plain text) it compares what users would see differ:
the token ids of the rendered prompt, the next-token logits at every position (both engines fed the same ids,
so a tokenizer difference cannot hide a weight difference), and a short greedy continuation. Float exports must
agree on the top-1 token everywhere; quantized ones report how often they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from discopop_cli.core.errors import RunFailure
from discopop_cli.core.faults import c_call_interrupts
from discopop_cli.export.quants import QuantType

GREEDY_TOKENS = 8

CONVERSATIONS: list[tuple[str, list[dict[str, str]]]] = [
    (
        "system + user",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    ),
    (
        "multi-turn",
        [
            {"role": "user", "content": "Hello! How are you today?"},
            {"role": "assistant", "content": "I am doing well, thank you. How can I help?"},
            {"role": "user", "content": "What colour is the sky on a clear day?"},
        ],
    ),
    (
        "system + multi-turn",
        [
            {"role": "system", "content": "Answer briefly and politely."},
            {"role": "user", "content": "What is 7 plus 5?"},
            {"role": "assistant", "content": "7 plus 5 is 12."},
            {"role": "user", "content": "And 9 minus 4?\nJust the number, please."},
        ],
    ),
]
PLAIN_TEXT = "The sky is blue  and\tgrass is green. Café ☕ costs 3.50 — isn't it great?\n\nYes!"
"""Plain text with the hard cases: double spaces, a tab, accents and an emoji (byte fallback), digits, newlines."""


class VerificationFailed(RunFailure):
    """llama.cpp and transformers disagree on the exported model."""


@dataclass
class PromptCheck:
    label: str
    hf_ids: list[int]
    llama_ids: list[int]
    top1_agreeing: int
    max_logit_diff: float
    hf_greedy: list[int] = field(default_factory=list)
    llama_greedy: list[int] = field(default_factory=list)

    @property
    def ids_equal(self) -> bool:
        return self.hf_ids == self.llama_ids

    @property
    def positions(self) -> int:
        return len(self.hf_ids)

    @property
    def greedy_equal(self) -> bool:
        return self.hf_greedy == self.llama_greedy

    def agrees(self, exact: bool) -> bool:
        """Same ids always; for a float export also the top-1 token everywhere and the greedy continuation."""
        if not self.ids_equal:
            return False
        return not exact or (self.top1_agreeing == self.positions and self.greedy_equal)


@dataclass
class VerifyReport:
    checks: list[PromptCheck]
    exact: bool  # float export: top-1 must agree everywhere

    @property
    def top1_agreement(self) -> float:
        return sum(c.top1_agreeing for c in self.checks) / max(1, sum(c.positions for c in self.checks))

    @property
    def passed(self) -> bool:
        return all(check.agrees(self.exact) for check in self.checks)


@dataclass(frozen=True)
class Prompt:
    label: str
    text: str
    chat: bool  # a rendered chat template (special tokens parsed, bos already in the text) or plain text
    hf_ids: list[int]


def _prompts(tokenizer: Any) -> list[Prompt]:
    """The prompts with transformers' token ids; conversations keep system turns only if the template has them."""
    prompts = []
    for label, messages in CONVERSATIONS:
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # e.g. Gemma's own template refuses system turns
            if messages[0]["role"] != "system":
                raise
            label, messages = label.replace("system + ", ""), messages[1:]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # apply_chat_template(tokenize=True) tokenizes exactly so: the template already wrote any bos.
        prompts.append(Prompt(label, text, True, tokenizer(text, add_special_tokens=False)["input_ids"]))
    prompts.append(Prompt("plain text", PLAIN_TEXT, False, tokenizer(PLAIN_TEXT)["input_ids"]))
    return prompts


def _llama_ids(llm: Any, prompt: Prompt) -> list[int]:
    if prompt.chat:
        return llm.tokenize(prompt.text.encode(), add_bos=False, special=True)
    return llm.tokenize(prompt.text.encode(), add_bos=True, special=False)


def _hf_run(model: Any, ids: list[int], eog: set[int]) -> tuple[np.ndarray, list[int]]:
    """Logits at every position, then a greedy continuation that stops at an end-of-generation token."""
    import torch

    with torch.no_grad():
        output = model(torch.tensor([ids]), use_cache=True)
        logits = output.logits[0].float().numpy()
        cache, last = output.cache, output.logits[0, -1]
        greedy: list[int] = []
        for _ in range(GREEDY_TOKENS):
            token = int(torch.argmax(last))
            greedy.append(token)
            if token in eog:
                break
            step = model(torch.tensor([[token]]), cache=cache, use_cache=True)
            cache, last = step.cache, step.logits[0, -1]
    return logits, greedy


def _llama_run(llm: Any, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    import llama_cpp

    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    greedy: list[int] = []
    for _ in range(GREEDY_TOKENS):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        greedy.append(token)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        llm.eval([token])
    return logits, greedy


def _end_of_generation_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def compare(model_dir: Path, gguf_path: Path, quant: QuantType) -> VerifyReport:
    """Run both engines on every prompt and collect the agreement figures."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # no "Loading weights" bar in the middle of the report
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    finally:
        if bars:
            logging.enable_progress_bar()
    prompts = _prompts(tokenizer)
    eog = _end_of_generation_ids(model, tokenizer)
    longest = max(len(prompt.hf_ids) for prompt in prompts) + GREEDY_TOKENS + 8
    with c_call_interrupts():  # llama.cpp logs the load through a callback that would drop a Ctrl-C
        llm = llama_cpp.Llama(
            model_path=str(gguf_path),
            n_ctx=longest,
            n_batch=longest,
            logits_all=True,
            verbose=False,
        )
    checks = []
    try:
        for prompt in prompts:
            hf_logits, hf_greedy = _hf_run(model, prompt.hf_ids, eog)
            llama_logits, llama_greedy = _llama_run(llm, prompt.hf_ids)
            agreeing = int(np.sum(np.argmax(hf_logits, axis=-1) == np.argmax(llama_logits, axis=-1)))
            checks.append(
                PromptCheck(
                    label=prompt.label,
                    hf_ids=list(prompt.hf_ids),
                    llama_ids=_llama_ids(llm, prompt),
                    top1_agreeing=agreeing,
                    max_logit_diff=float(np.max(np.abs(hf_logits - llama_logits))),
                    hf_greedy=hf_greedy,
                    llama_greedy=llama_greedy,
                )
            )
    finally:
        llm.close()
    return VerifyReport(checks=checks, exact=quant.is_float)


def print_report(report: VerifyReport, quant: QuantType) -> None:
    from rich.table import Table

    from discopop_cli.core.console import out

    def mark(ok: bool) -> str:
        return "[green]same[/]" if ok else "[red]differ[/]"

    table = Table(
        title=f"llama.cpp ({quant.label} GGUF) vs transformers",
        title_justify="left",
        caption=f"ids: token ids of the prompt; top-1: next-token argmax agreement over its positions; "
        f"greedy: the first {GREEDY_TOKENS} greedy tokens",
        caption_justify="left",
    )
    for column in ("prompt", "tokens", "ids", "top-1", "max |Δlogit|", "greedy"):
        table.add_column(column, justify="left" if column in ("prompt", "ids") else "right", no_wrap=True)
    for check in report.checks:
        share = check.top1_agreeing / max(1, check.positions)
        table.add_row(
            check.label,
            str(check.positions),
            mark(check.ids_equal),
            f"{share:.1%} ({check.top1_agreeing}/{check.positions})",
            f"{check.max_logit_diff:.2e}",
            mark(check.greedy_equal),
        )
    out.print(table)
    verdict = "[green]passed[/]" if report.passed else "[red]failed[/]"
    out.print(f"verify {verdict}: top-1 agreement {report.top1_agreement:.1%}", highlight=False)


def verify_export(model_dir: Path, gguf_path: Path, quant: QuantType) -> VerifyReport:
    report = compare(model_dir, gguf_path, quant)
    print_report(report, quant)
    if not report.passed:
        failing = [check.label for check in report.checks if not check.agrees(report.exact)]
        what = "token ids" if not all(check.ids_equal for check in report.checks) else "top-1 tokens"
        raise VerificationFailed(
            f"{gguf_path.name} and transformers disagree on {what} ({', '.join(failing)}); see the table above"
        )
    return report
