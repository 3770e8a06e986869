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
    from llama_cpp import Llama

    llm = Llama(model_path=gguf_path, n_ctx=0, verbose=False)  # 0: the model's own context length
    try:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": message})
        reply = llm.create_chat_completion(
            messages=messages, temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=max_tokens
        )
    finally:
        llm.close()
    return str(reply["choices"][0]["message"]["content"] or "")


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
    reply = chat_turn(args.gguf, args.message, args.system, args.max_tokens)
    print(f"user: {args.message}\nassistant: {reply}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
