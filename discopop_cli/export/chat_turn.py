"""One chat turn through llama.cpp with the chat template embedded in a GGUF: how `make demo` ends.

    python -m discopop_cli.export.chat_turn MODEL.gguf ["user message"] [--system TEXT]

Greedy decoding with no repetition penalty, so the reply is the one transformers would give the same prompt.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MESSAGE = "What is the capital of France?"


def chat_turn(gguf_path: str, message: str, system: str | None = None, max_tokens: int = 48) -> str:
    """The assistant's reply to one user message, rendered and stopped the way llama.cpp does it."""
    return chat_turn_stop(gguf_path, message, system, max_tokens)[0]


def chat_turn_stop(
    gguf_path: str, message: str, system: str | None = None, max_tokens: int = 48
) -> tuple[str, str | None]:
    """(reply, the token generation stopped at; None when it ran out of max_tokens)."""
    import numpy as np
    from llama_cpp import Llama

    # Not the model's own context length (0): Gemma 3's 32k would cost a 32k-token cache for one short turn.
    llm = Llama(model_path=gguf_path, n_ctx=2048, verbose=False)
    try:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": message})
        reply = llm.create_chat_completion(
            messages=messages, temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=max_tokens
        )
        stop = None
        if reply["choices"][0]["finish_reason"] == "stop":
            # Greedy decoding: the end-of-generation token it stopped at is the argmax after the last token.
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            stop = llm._model.token_to_piece(token, special=True).decode("utf-8", "replace")
    finally:
        llm.close()
    return str(reply["choices"][0]["message"]["content"] or ""), stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discopop_cli.export.chat_turn", description=__doc__.split("\n")[0])
    parser.add_argument("gguf", help="An exported .gguf file.")
    parser.add_argument("message", nargs="?", default=DEFAULT_MESSAGE, help="The user's message.")
    parser.add_argument("--system", help="A system prompt.")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        from discopop_cli.export.quants import INSTALL_HINT

        print(f"error: a chat turn through llama.cpp needs llama-cpp-python; run: {INSTALL_HINT}", file=sys.stderr)
        return 2
    reply, stop = chat_turn_stop(args.gguf, args.message, args.system, args.max_tokens)
    ending = f"stopped at {stop}" if stop else f"cut at --max-tokens {args.max_tokens}"
    print(f"user: {args.message}\nassistant: {reply}\n[{ending}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
