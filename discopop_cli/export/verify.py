"""`--verify`: the exported GGUF run by llama.cpp, measured against the source model run by transformers.

On a few prompts (chats rendered by the model's own template, a system turn where it has one, and plain text; a
model without a chat template gets plain text only) both engines are fed the same token ids, so a tokenizer
difference cannot hide a weight difference, and the report measures what a user would see differ:

- the prompt's token ids, as llama.cpp's own tokenizer makes them from the GGUF (must be equal);
- the full next-token distributions at every position: KL(transformers || llama.cpp), mean, 99th percentile, max;
- top-1 agreement over the positions where transformers' top two logits are more than `TIE_MARGIN` apart (a
  near-tie flips on rounding noise, so it says nothing about the export);
- greedy continuations of both, side by side.

The verdict applies per-quant thresholds (`THRESHOLDS`, calibrated on SmolLM2-135M-Instruct and Gemma 3 270M; the
figures that set them are in docs/commands/export.md), and always fails when every greedy continuation differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from discopop_cli.core.errors import RunFailure
from discopop_cli.core.llama import load_llama
from discopop_cli.export.quants import QuantType

GREEDY_TOKENS = 12
TIE_MARGIN = 0.05
"""Logits: a position whose reference top two are closer than this is a tie, and not counted for top-1."""

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
MORE_PLAIN_TEXTS = [
    ("plain question", "Question: What is the capital of France?\nAnswer: The capital of France is"),
    (
        "plain prose",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who every morning",
    ),
    ("plain code", "def add(a, b):\n    return a + b\n\n\nprint(add(7, 5))\n"),
]
"""For a model without a chat template, in place of the chats: a question, prose and code."""


@dataclass(frozen=True)
class Threshold:
    """The most a `--quant` type may differ from transformers and still pass."""

    mean_kl: float
    p99_kl: float
    top1: float  # share of untied positions with the same top token


# Calibrated on SmolLM2-135M-Instruct and Gemma 3 270M with bench/verify_thresholds.py (the table is in
# docs/commands/export.md): for each width, 3 times the larger mean and 99th-percentile KL the two models' exports
# measured and their lower top-1 less 5 points, then made monotone (fewer bits never stricter than more). Floats must
# match to rounding. What a width's thresholds let through, the greedy rule (`VerifyReport.problems`) can still refuse.
_FLOAT = Threshold(mean_kl=0.002, p99_kl=0.02, top1=0.995)
_BY_BITS = {
    8: Threshold(mean_kl=0.02, p99_kl=0.11, top1=0.91),
    6: Threshold(mean_kl=0.06, p99_kl=0.38, top1=0.87),
    5: Threshold(mean_kl=0.35, p99_kl=3.8, top1=0.80),
    4: Threshold(mean_kl=0.35, p99_kl=3.8, top1=0.80),
    3: Threshold(mean_kl=0.61, p99_kl=4.4, top1=0.73),
    2: Threshold(mean_kl=1.6, p99_kl=7.2, top1=0.62),
}


def threshold(quant: QuantType) -> Threshold:
    if quant.is_float:
        return _FLOAT
    return _BY_BITS[int(quant.name[1])]


LADDER = ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16"]
"""The usual types from smallest to largest: what the report suggests in place of one that fails."""


class VerificationFailed(RunFailure):
    """llama.cpp and transformers disagree on the exported model beyond what its quant type allows."""


@dataclass
class PromptCheck:
    label: str
    hf_ids: list[int]
    llama_ids: list[int]
    kl: np.ndarray  # per position
    top1_agreeing: int  # over untied positions
    untied: int
    top1_all: int  # over every position, ties included: what a plain argmax comparison reports
    max_logit_diff: float
    hf_greedy: list[int] = field(default_factory=list)
    llama_greedy: list[int] = field(default_factory=list)
    hf_text: str = ""
    llama_text: str = ""

    @property
    def ids_equal(self) -> bool:
        return self.hf_ids == self.llama_ids

    @property
    def positions(self) -> int:
        return len(self.hf_ids)

    @property
    def greedy_equal(self) -> bool:
        return self.hf_greedy == self.llama_greedy


@dataclass
class VerifyReport:
    quant: QuantType
    checks: list[PromptCheck]

    @property
    def kl(self) -> np.ndarray:
        return np.concatenate([check.kl for check in self.checks])

    @property
    def mean_kl(self) -> float:
        return float(np.mean(self.kl))

    @property
    def p99_kl(self) -> float:
        return float(np.percentile(self.kl, 99))

    @property
    def max_kl(self) -> float:
        return float(np.max(self.kl))

    @property
    def untied(self) -> int:
        return sum(check.untied for check in self.checks)

    @property
    def positions(self) -> int:
        return sum(check.positions for check in self.checks)

    @property
    def top1_agreement(self) -> float:
        return sum(check.top1_agreeing for check in self.checks) / max(1, self.untied)

    @property
    def threshold(self) -> Threshold:
        return threshold(self.quant)

    def problems(self) -> list[str]:
        """Why the export fails its quant type's thresholds; empty when it passes."""
        limit, found = self.threshold, []
        differing = [check.label for check in self.checks if not check.ids_equal]
        if differing:
            found.append(f"token ids differ ({', '.join(differing)})")
        if self.mean_kl > limit.mean_kl:
            found.append(f"mean KL {self.mean_kl:.4f} > {limit.mean_kl}")
        if self.p99_kl > limit.p99_kl:
            found.append(f"99th-percentile KL {self.p99_kl:.4f} > {limit.p99_kl}")
        if self.top1_agreement < limit.top1:
            found.append(f"top-1 {self.top1_agreement:.1%} < {limit.top1:.0%}")
        if not any(check.greedy_equal for check in self.checks):
            found.append(f"every greedy continuation differs ({len(self.checks)} of {len(self.checks)})")
        return found

    @property
    def passed(self) -> bool:
        return not self.problems()


@dataclass(frozen=True)
class Prompt:
    label: str
    text: str
    chat: bool  # a rendered chat template (special tokens parsed, bos already in the text) or plain text
    hf_ids: list[int]


def _prompts(tokenizer: Any) -> list[Prompt]:
    """The prompts with transformers' token ids; conversations keep system turns only if the template has them."""
    plain = [("plain text", PLAIN_TEXT)]
    if not tokenizer.chat_template:
        return [Prompt(label, text, False, tokenizer(text)["input_ids"]) for label, text in MORE_PLAIN_TEXTS + plain]
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
    return prompts + [Prompt(label, text, False, tokenizer(text)["input_ids"]) for label, text in plain]


def _llama_ids(llm: Any, prompt: Prompt) -> list[int]:
    if prompt.chat:
        return llm.tokenize(prompt.text.encode(), add_bos=False, special=True)
    return llm.tokenize(prompt.text.encode(), add_bos=True, special=False)  # bos only where the vocabulary adds it


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def measure(reference: np.ndarray, exported: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """KL(reference || exported) per position, top-1 agreements over untied positions, untied positions, and top-1
    agreements over all positions."""
    width = min(reference.shape[-1], exported.shape[-1])  # a padded GGUF vocabulary has extra, never-used rows
    reference, exported = reference[:, :width], exported[:, :width]
    log_p, log_q = _log_softmax(reference), _log_softmax(exported)
    kl = np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)
    top_two = np.sort(np.partition(reference, -2, axis=-1)[:, -2:], axis=-1)
    untied = (top_two[:, 1] - top_two[:, 0]) > TIE_MARGIN
    agreeing = np.argmax(reference, axis=-1) == np.argmax(exported, axis=-1)
    return kl, int(np.sum(agreeing & untied)), int(np.sum(untied)), int(np.sum(agreeing))


@dataclass
class Reference:
    """transformers' side, computed once for every GGUF compared with it."""

    tokenizer: Any
    prompts: list[Prompt]
    runs: list[tuple[np.ndarray, list[int]]]


def reference_runs(model_dir: Path) -> Reference:
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
    runs = [_hf_run(model, prompt.hf_ids, eog) for prompt in prompts]
    del model
    return Reference(tokenizer, prompts, runs)


def _end_of_generation_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def compare_with(reference: Reference, gguf_path: Path, quant: QuantType) -> VerifyReport:
    """Run llama.cpp on every prompt and measure it against the reference."""
    longest = max(len(prompt.hf_ids) for prompt in reference.prompts) + GREEDY_TOKENS + 8
    llm = load_llama(gguf_path, n_ctx=longest, n_batch=longest, logits_all=True)
    checks = []
    try:
        for prompt, (hf_logits, hf_greedy) in zip(reference.prompts, reference.runs, strict=True):
            llama_logits, llama_greedy = _llama_run(llm, prompt.hf_ids)
            kl, agreeing, untied, agreeing_all = measure(hf_logits, llama_logits)
            width = min(hf_logits.shape[-1], llama_logits.shape[-1])
            checks.append(
                PromptCheck(
                    label=prompt.label,
                    hf_ids=list(prompt.hf_ids),
                    llama_ids=_llama_ids(llm, prompt),
                    kl=kl,
                    top1_agreeing=agreeing,
                    untied=untied,
                    top1_all=agreeing_all,
                    max_logit_diff=float(np.max(np.abs(hf_logits[:, :width] - llama_logits[:, :width]))),
                    hf_greedy=hf_greedy,
                    llama_greedy=llama_greedy,
                    hf_text=reference.tokenizer.decode(hf_greedy),
                    llama_text=reference.tokenizer.decode(llama_greedy),
                )
            )
    finally:
        llm.close()
    return VerifyReport(quant=quant, checks=checks)


def compare(model_dir: Path, gguf_path: Path, quant: QuantType) -> VerifyReport:
    return compare_with(reference_runs(model_dir), gguf_path, quant)


def _side_by_side(first: str, second: str, width: int = 48) -> tuple[str, str]:
    """Both texts escaped, from a little before where they start to differ, cut to `width`."""
    first, second = repr(first)[1:-1], repr(second)[1:-1]
    same = next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), min(len(first), len(second))
    )
    start = max(0, same - 16)

    def cut(text: str) -> str:
        shown = ("…" if start else "") + text[start:]
        return shown if len(shown) <= width else shown[: width - 1] + "…"

    return cut(first), cut(second)


def print_report(report: VerifyReport) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from discopop_cli.core.console import out

    def mark(ok: bool) -> str:
        return "[green]same[/]" if ok else "[red]differ[/]"

    table = Table(
        title=f"llama.cpp ({report.quant.label} GGUF) vs transformers",
        title_justify="left",
        caption=f"KL: KL(transformers || llama.cpp) of the next-token distributions; top-1: agreement where "
        f"transformers' top two differ by more than {TIE_MARGIN} (ties left out); greedy: the "
        f"first {GREEDY_TOKENS} greedy tokens",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("prompt", "ids", "KL mean", "KL p99", "KL max", "top-1", "greedy"):
        table.add_column(column, justify="left" if column in ("prompt", "ids") else "right", no_wrap=True)
    for check in report.checks:
        share = check.top1_agreeing / max(1, check.untied)
        table.add_row(
            check.label,
            mark(check.ids_equal),
            f"{np.mean(check.kl):.4f}",
            f"{np.percentile(check.kl, 99):.3f}",
            f"{np.max(check.kl):.3f}",
            f"{share:.1%} ({check.top1_agreeing}/{check.untied})",
            mark(check.greedy_equal),
        )
    out.print(table)
    for check in report.checks:
        if not check.greedy_equal:
            pad = " " * len(check.label)
            ours, theirs = _side_by_side(check.hf_text, check.llama_text)
            out.print(f"  {escape(check.label)}: transformers {escape(ours)}", highlight=False)
            out.print(f"  {pad}  llama.cpp    {escape(theirs)}", highlight=False)
    limit = report.threshold
    figures = (
        f"mean KL {report.mean_kl:.4f} (≤ {limit.mean_kl}), 99th percentile {report.p99_kl:.4f} (≤ {limit.p99_kl}), "
        f"top-1 {report.top1_agreement:.1%} (≥ {limit.top1:.0%}) over {report.untied} of {report.positions} positions"
    )
    verdict = "[green]passed[/]" if report.passed else "[red]failed[/]"
    out.print(f"verify {verdict} ({report.quant.label}): {figures}", highlight=False, soft_wrap=True)


def _ladder_hint(failed: QuantType) -> str:
    index = LADDER.index(failed.name) if failed.name in LADDER else None
    larger = LADDER[index + 1 :] if index is not None else []
    return f"try a larger type: --quant {larger[0]}" if larger else "the export itself is wrong, not its precision"


def verify_exports(model_dir: Path, gguf_paths: dict[QuantType, Path]) -> list[VerifyReport]:
    """Measure every exported GGUF against one transformers run.

    One type: it must pass its thresholds. Several: the report names the smallest that passes, and the command
    fails only when none does (a user exporting q4_k_m,q6_k,q8_0 is asking which one is good enough).
    """
    from discopop_cli.core.console import out

    reference = reference_runs(model_dir)
    reports = []
    for quant, gguf_path in gguf_paths.items():
        report = compare_with(reference, gguf_path, quant)
        print_report(report)
        reports.append(report)
    passing = [report for report in reports if report.passed]
    failing = [report for report in reports if not report.passed]
    if len(reports) > 1 and passing:
        smallest = min(passing, key=lambda report: _bits(report.quant))
        failed_names = ", ".join(report.quant.label for report in failing)
        out.print(
            f"verify: the smallest type that passes is {smallest.quant.label}"
            + (f" ({failed_names} {'fails its' if len(failing) == 1 else 'fail their'} thresholds)" if failing else ""),
            highlight=False,
        )
        return reports
    if failing:
        first = failing[0]
        raise VerificationFailed(
            f"{first.quant.label} is too far from transformers ({'; '.join(first.problems())}); "
            f"{_ladder_hint(first.quant)}"
        )
    return reports


def _bits(quant: QuantType) -> float:
    """Bits per weight, roughly, to order types by size."""
    return {"f32": 32, "f16": 16, "bf16": 16}.get(quant.name, int(quant.name[1]) + (0.5 if "_k_m" in quant.name else 0))


def verify_export(model_dir: Path, gguf_path: Path, quant: QuantType) -> VerifyReport:
    return verify_exports(model_dir, {quant: gguf_path})[0]
