"""A chat format as Ollama can render it, written as a Go template, and rendered here the way Ollama would.

The format is what the reader (`probe`) finds in a Jinja template: a head (usually the bos token), per-role turn
wrappers, the generation prompt, and a *system slot*: where the system message goes (before the first turn, or
inside the first or the last user turn), the text around it, and the slot's text when the chat has none (a default
system message, a date line). `go_template` writes the `.Messages` form that Ollama executes once over the whole
chat; `render_like_ollama` follows the same steps in Python (Ollama's system-message handling and merging of
consecutive same-role messages included), so the reader can check a translation without Go and the tests can
check, with Go, that the two agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

START, FIRST_USER, LAST_USER = "start", "first user turn", "last user turn"


@dataclass(frozen=True)
class SystemSlot:
    where: str  # START, FIRST_USER or LAST_USER
    prefix: str
    suffix: str
    fallback: str  # the slot's text when the chat has no system message

    @property
    def always(self) -> bool:
        """The slot is written even for an empty system text (Llama 3.1's date block)."""
        return self.fallback == self.prefix + self.suffix

    def fill(self, system: str) -> str:
        if system or self.always:
            return self.prefix + system + self.suffix
        return self.fallback


@dataclass(frozen=True)
class ChatFormat:
    head: str  # written once at the start (typically the bos token)
    user: tuple[str, str]  # (prefix, suffix)
    assistant: tuple[str, str]
    generation_prompt: str
    system: SystemSlot | None = None  # None: the template has no system message (Gemma's raises on one)
    default_system: str | None = None  # the text the template uses when there is none: the Modelfile's SYSTEM
    notes: tuple[str, ...] = ()  # what the translation fixed or left out, for the Modelfile's comments

    @property
    def has_system(self) -> bool:
        return self.system is not None

    @property
    def wrappers(self) -> dict[str, tuple[str, str]]:
        found = {"user": self.user, "assistant": self.assistant}
        if self.system is not None:
            found["system"] = (self.system.prefix, self.system.suffix)
        return found


def _collate(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """Ollama's view of a chat: all system texts joined by a blank line; consecutive same-role messages merged."""
    systems = [m["content"] for m in messages if m["role"] == "system"]
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + message["content"]}
        else:
            merged.append(dict(message))
    return "\n\n".join(systems), merged


def ollama_messages(messages: list[dict[str, str]], modelfile_system: str | None) -> list[dict[str, str]]:
    """The chat Ollama's chat endpoint renders: the Modelfile's SYSTEM first when the chat does not start with one."""
    if modelfile_system and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": modelfile_system}, *messages]
    return list(messages)


def render_like_ollama(fmt: ChatFormat, messages: list[dict[str, str]], modelfile_system: str | None) -> str:
    """What Ollama's execution of `go_template(fmt)` produces for this chat (generation prompt included)."""
    system, merged = _collate(ollama_messages(messages, modelfile_system))
    slot = fmt.system
    parts = [fmt.head]
    if slot is not None and slot.where == START:
        parts.append(slot.fill(system))
    seen_user = False
    for index, message in enumerate(merged):
        last = index == len(merged) - 1
        if message["role"] == "user":
            parts.append(fmt.user[0])
            if slot is not None and (
                (slot.where == FIRST_USER and not seen_user) or (slot.where == LAST_USER and last)
            ):
                parts.append(slot.fill(system))
            seen_user = True
            parts += [message["content"], fmt.user[1]]
        elif message["role"] == "assistant":
            parts += [fmt.assistant[0], message["content"]]
            if not last:
                parts.append(fmt.assistant[1])
        if last and message["role"] != "assistant":
            parts.append(fmt.generation_prompt)
    return "".join(parts)


def _literal(text: str) -> str:
    """Text as it goes into the Go template: raw where possible, a quoted Go string where braces would parse."""
    if "{{" in text or "}}" in text or text.endswith("{") or text.startswith("}"):
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


def _slot(slot: SystemSlot, system: str) -> str:
    lit = _literal
    filled = f"{lit(slot.prefix)}{{{{ {system} }}}}{lit(slot.suffix)}"
    if slot.always:
        return filled
    fallback = f"{{{{ else }}}}{lit(slot.fallback)}" if slot.fallback else ""
    return f"{{{{ if {system} }}}}{filled}{fallback}{{{{ end }}}}"


def go_template(fmt: ChatFormat, *, drop_head: bool = False) -> str:
    """Ollama's `.Messages` template for the format.

    Written without `{{-` trim markers, whose whitespace trimming would eat the newlines the wrappers end with.
    A trailing assistant message is left open (no suffix), so Ollama continues it instead of starting a turn.
    """
    lit = _literal
    slot = fmt.system
    parts = [] if drop_head else [lit(fmt.head)]
    if slot is not None and slot.where == START:
        parts.append(_slot(slot, ".System"))
    in_user = ""
    if slot is not None and slot.where == FIRST_USER:
        parts.append("{{ $seen := false }}")
        in_user = f"{{{{ if not $seen }}}}{_slot(slot, '$.System')}{{{{ end }}}}{{{{ $seen = true }}}}"
    elif slot is not None and slot.where == LAST_USER:
        in_user = f"{{{{ if $last }}}}{_slot(slot, '$.System')}{{{{ end }}}}"
    user_prefix, user_suffix = fmt.user
    assistant_prefix, assistant_suffix = fmt.assistant
    parts += [
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}",
        f'{{{{ if eq .Role "user" }}}}{lit(user_prefix)}{in_user}{{{{ .Content }}}}{lit(user_suffix)}',
        f'{{{{ else if eq .Role "assistant" }}}}{lit(assistant_prefix)}{{{{ .Content }}}}',
        f"{{{{ if not $last }}}}{lit(assistant_suffix)}{{{{ end }}}}{{{{ end }}}}",
        f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(fmt.generation_prompt)}{{{{ end }}}}',
        "{{ end }}",
    ]
    return "".join(parts)
