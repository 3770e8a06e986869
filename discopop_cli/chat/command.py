"""`discopop chat MODEL`: one turn with `--prompt`, or an interactive session until end of input or /bye."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from discopop_cli.chat.engines import Message, Reply, Sampling, open_engine
from discopop_cli.core.console import notice
from discopop_cli.core.errors import UserError

PROMPT = ">>> "
LEAVE = {"/bye", "/exit"}


def _check(sampling: Sampling, context: int) -> None:
    if sampling.temperature < 0:
        raise UserError(f"--temperature {sampling.temperature} is below 0; use 0 for greedy answers")
    if not 0 < sampling.top_p <= 1:
        raise UserError(f"--top-p {sampling.top_p} is outside (0, 1]; 0.95 is the model page's")
    if sampling.top_k < 0:
        raise UserError(f"--top-k {sampling.top_k} is below 0; 0 turns it off")
    if sampling.max_tokens < 1:
        raise UserError(f"--max-tokens {sampling.max_tokens} is below 1")
    if context < 0:
        raise UserError(f"--context {context} is below 0; 0 means the model's own length")


def _stream(reply: Reply, sampling: Sampling) -> str:
    """Print the reply as it comes; say so when it was cut at --max-tokens rather than ended by the model."""
    text = ""
    for piece in reply.pieces:
        text += piece
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not reply.finished:
        notice(f"the reply reached --max-tokens {sampling.max_tokens} before the model ended its turn")
    return text


def run_chat(model: Path, *, prompt: str | None, system: str | None, sampling: Sampling, context: int) -> None:
    _check(sampling, context)
    engine = open_engine(model, context)
    try:
        if not engine.template:
            notice(f"{model} has no chat template: each message goes to the model verbatim, with no history")
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        if prompt is not None:
            messages.append({"role": "user", "content": prompt})
            _stream(engine.reply(messages, sampling), sampling)
            return
        _interactive(engine, messages, sampling)
    finally:
        engine.close()


def _interactive(engine: object, messages: list[Message], sampling: Sampling) -> None:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    if sys.stdin.isatty():
        print("Type a message; /bye or end of input (Ctrl-D) leaves.", file=sys.stderr)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            print()
            return
        if line.strip() in LEAVE:
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        try:
            answer = _stream(engine.reply(messages, sampling), sampling)  # type: ignore[attr-defined]
        except KeyboardInterrupt:
            # Ctrl-C stops this reply, not the session; the unfinished turn is forgotten.
            print()
            messages.pop()
            continue
        if engine.template:  # type: ignore[attr-defined]
            messages.append({"role": "assistant", "content": answer})
        else:
            messages.pop()
