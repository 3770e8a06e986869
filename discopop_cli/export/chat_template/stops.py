"""Where a reply stops: the control tokens the chat format writes around turns.

Only control tokens count (`<|im_start|>`, `<|im_end|>`, `<start_of_turn>`, `<end_of_turn>`, eos): a vocabulary may
also type text as user-defined tokens (Gemma's `\n`, `\n\n` and runs of spaces), and those occur inside answers,
so a reply must never stop at them. Whitespace is never a stop, whatever its type.
"""

from __future__ import annotations

from discopop_cli.export.chat_template.format import ChatFormat


def _tokens_in(text: str, special_texts: set[str]) -> list[str]:
    """The special tokens in `text`, in order of appearance."""
    found: list[tuple[int, str]] = []
    for token in special_texts:
        start = text.find(token)
        while start != -1:
            found.append((start, token))
            start = text.find(token, start + 1)
    return [token for _, token in sorted(found)]


def stop_strings(fmt: ChatFormat, special_texts: set[str], bos_text: str | None) -> list[str]:
    """Turn-start tokens, then end-of-turn tokens: where a reply must stop (the seed's ["<|im_start|>", "<|im_end|>"]).

    `special_texts` are the vocabulary's control tokens; whitespace among them is dropped all the same.
    """
    special_texts = {text for text in special_texts if text.strip()}
    prefixes = "".join(prefix for prefix, _ in fmt.wrappers.values()) + fmt.generation_prompt
    suffixes = "".join(suffix for _, suffix in fmt.wrappers.values())
    stops: list[str] = []
    for token in _tokens_in(prefixes, special_texts) + _tokens_in(suffixes, special_texts):
        # bos is no stop, unless it also opens turns (SmolLM2's bos is <|im_start|>).
        if token not in stops and (token != bos_text or token in fmt.user[0]):
            stops.append(token)
    if not stops:
        # A plain-text format (e.g. "### Instruction:"): the next user header is where the reply ends.
        header = fmt.user[0].strip()
        if header:
            stops.append(header.splitlines()[0])
    return stops


def end_of_turn_token(fmt: ChatFormat, special_texts: set[str]) -> str | None:
    """The control token that closes an assistant turn (`<|im_end|>` for ChatML), if there is one."""
    special_texts = {text for text in special_texts if text.strip()}
    tokens = _tokens_in(fmt.assistant[1], special_texts)
    return tokens[0] if tokens else None
