"""Read a Jinja chat template as a `ChatFormat`: rendered on probe chats, cut at sentinel contents, then checked.

No Jinja-to-Go compiler exists, and none is needed for the templates chat models ship: nearly all of them wrap
each message as `prefix(role) + content + suffix(role)`, put the system message in one place, and end a prompt with
a generation prompt. So the template is rendered (as transformers renders it) on chats whose contents are sentinels,
the wrappers are cut out of the text around them, and the format is checked by rendering more chats both ways:
through the template, and as Ollama would render the Go template written from the format. Anything that differs
is refused with the reason; a guess is never written.
"""

from __future__ import annotations

import re
from datetime import date

from discopop_cli.export.chat_template.format import (
    FIRST_USER,
    LAST_USER,
    START,
    ChatFormat,
    SystemSlot,
    render_like_ollama,
)
from discopop_cli.export.chat_template.jinja_env import JinjaTemplate, NotTranslatable, compile_template

SYSTEM, USER1, ASSISTANT1, USER2, ASSISTANT2, USER3 = (
    "Xq7SYSTEMq7X",
    "Xq7USER1q7X",
    "Xq7ASSISTANT1q7X",
    "Xq7USER2q7X",
    "Xq7ASSISTANT2q7X",
    "Xq7USER3q7X",
)
_TOOLS = re.compile(r"\b(tools|tool_calls|functions)\b")


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def _render(template: JinjaTemplate, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return template.render(messages, add_generation_prompt)
    except Exception as exc:  # the template's own raise_exception, or an undefined variable it needs
        raise NotTranslatable(f"it fails on a plain {len(messages)}-message chat: {exc}") from None


def _cut(text: str, *sentinels: str) -> list[str]:
    """The text around each sentinel, which must appear once each, in order."""
    pieces = []
    for sentinel in sentinels:
        if text.count(sentinel) != 1:
            raise NotTranslatable(f"a message's text appears {text.count(sentinel)} times in the rendered chat")
        head, _, text = text.partition(sentinel)
        pieces.append(head)
    return [*pieces, text]


def _common_prefix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def _common_suffix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[-1 - size] == b[-1 - size]:
        size += 1
    return a[len(a) - size :]


def _turn_wrappers(template: JinjaTemplate) -> tuple[str, tuple[str, str], tuple[str, str], str]:
    """(text before the first user turn, user wrappers, assistant wrappers, generation prompt) of system-less chats."""
    three = chat(("user", USER1), ("assistant", ASSISTANT1), ("user", USER2))
    text = _render(template, three, False)
    before, user_assistant, assistant_user, tail = _cut(text, USER1, ASSISTANT1, USER2)
    # A chat that is not prompted may end with more than a user turn's suffix (Phi-3.5 adds eos).
    user_suffix = _common_prefix(tail, user_assistant)
    assistant_prefix = user_assistant[len(user_suffix) :]
    prompted = _render(template, three, True)
    unprompted = text[: len(text) - len(tail)] + user_suffix
    if not prompted.startswith(unprompted):
        raise NotTranslatable("the generation prompt changes the turns before it")
    generation_prompt = prompted[len(unprompted) :]

    # Where an assistant turn ends and the next user turn begins: as the template ends a final assistant turn,
    # else the longest ending the first user turn shares (what is left is the assistant's suffix).
    ending = _cut(_render(template, three[:2], False), USER1, ASSISTANT1)[-1]
    if ending and assistant_user.startswith(ending) and before.endswith(assistant_user[len(ending) :]):
        user_prefix = assistant_user[len(ending) :]
    else:
        user_prefix = _common_suffix(before, assistant_user)
    assistant_suffix = assistant_user[: len(assistant_user) - len(user_prefix)]
    head = before[: len(before) - len(user_prefix)]
    return head, (user_prefix, user_suffix), (assistant_prefix, assistant_suffix), generation_prompt


def _system_slot(template: JinjaTemplate, head: str, user_prefix: str, rest_without: str) -> SystemSlot | None:
    """Where the system message goes, read from a chat with one; None when the template has no system role."""
    messages = chat(("system", SYSTEM), ("user", USER1), ("assistant", ASSISTANT1), ("user", USER2))
    try:
        text = template.render(messages, False)
    except Exception:
        return None  # the template refuses system messages (Gemma's raises): the Go template gets none either
    if SYSTEM not in text:
        return None
    before_user, rest = text.split(USER1, 1) if text.count(USER1) == 1 else ("", "")
    if SYSTEM in before_user and before_user.endswith(user_prefix) and rest == rest_without:
        slot_text = before_user[: len(before_user) - len(user_prefix)]
        if slot_text.count(SYSTEM) == 1:
            prefix, suffix = slot_text.split(SYSTEM)
            return SystemSlot(START, prefix, suffix, head)
    if SYSTEM in before_user and before_user.startswith(head + user_prefix) and rest == rest_without:
        prefix, suffix = before_user[len(head + user_prefix) :].split(SYSTEM, 1)
        return SystemSlot(FIRST_USER, prefix, suffix, "")
    if before_user == head + user_prefix and rest.count(USER2) == 1:
        # Inside the last user turn (Mistral Nemo): right after its prefix, before its text.
        before_last, after_last = rest_without.split(USER2)
        inserted, after = rest.split(USER2)
        if inserted.startswith(before_last) and after == after_last and inserted.count(SYSTEM) == 1:
            prefix, suffix = inserted[len(before_last) :].split(SYSTEM)
            return SystemSlot(LAST_USER, prefix, suffix, "")
    raise NotTranslatable("the system message goes where no Ollama template can put it")


def _notes(source: str, template: JinjaTemplate) -> tuple[str, ...]:
    notes = []
    if template.dates:
        notes.append(
            f"The template's date ({template.dates[-1]}, from strftime_now) is fixed at export time "
            f"({date.today().isoformat()}); export again to update it."
        )
    elif "date_string" in source:
        notes.append("The template's date line keeps its own default date (transformers sets no date_string).")
    if _TOOLS.search(source):
        notes.append("The template's tool-calling branches are left out: this TEMPLATE renders plain chats.")
    return tuple(notes)


CHECKS = [
    chat(("user", USER1)),
    chat(("user", USER1), ("assistant", ASSISTANT1), ("user", USER2)),
    chat(("user", USER1), ("assistant", ASSISTANT1), ("user", USER2), ("assistant", ASSISTANT2), ("user", USER3)),
    chat(("user", "two\nlines"), ("assistant", "ok"), ("user", "more")),
]
SYSTEM_CHECKS = [
    chat(("system", SYSTEM), ("user", USER1)),
    chat(("system", SYSTEM), ("user", USER1), ("assistant", ASSISTANT1), ("user", USER2)),
    chat(
        ("system", "Be brief."),
        ("user", USER1),
        ("assistant", ASSISTANT1),
        ("user", USER2),
        ("assistant", ASSISTANT2),
        ("user", USER3),
    ),
]


def read_chat_format(source: str, special_tokens: dict[str, str]) -> ChatFormat:
    """The template's format, checked on one- and multi-turn chats with and without a system message."""
    template = compile_template(source, special_tokens)
    head, user, assistant, generation_prompt = _turn_wrappers(template)
    rest_without = _render(template, chat(("user", USER1), ("assistant", ASSISTANT1), ("user", USER2)), False)
    rest_without = rest_without.split(USER1, 1)[1]
    slot = _system_slot(template, head, user[0], rest_without)
    default_system = None
    if slot is not None and slot.where == START:
        bos = special_tokens.get("bos_token") or ""
        # A bos that only begins the text is the head (llama.cpp may add it itself); one that also opens turns
        # (SmolLM2's <|im_start|>) is part of the system turn.
        if bos and bos not in user[0] and slot.prefix.startswith(bos) and slot.fallback.startswith(bos):
            head, slot = bos, SystemSlot(START, slot.prefix[len(bos) :], slot.suffix, slot.fallback[len(bos) :])
        else:
            head = ""
        inner = slot.fallback[len(slot.prefix) : len(slot.fallback) - len(slot.suffix)]
        if len(slot.fallback) > len(slot.prefix + slot.suffix) and slot.prefix + inner + slot.suffix == slot.fallback:
            default_system = inner
    fmt = ChatFormat(head, user, assistant, generation_prompt, slot, default_system, _notes(source, template))
    for messages in CHECKS + (SYSTEM_CHECKS if slot is not None else []):
        expected = _render(template, messages, True)
        if render_like_ollama(fmt, messages, default_system) != expected:
            raise NotTranslatable(f"a {len(messages)}-message chat renders differently from the template")
    return fmt
