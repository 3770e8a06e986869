"""The model's Jinja chat template, read as per-role turn wrappers and written as Ollama's Go template.

No Jinja-to-Go compiler exists, and none is needed for the templates chat models ship: nearly all of them wrap
each message as `prefix(role) + content + suffix(role)` and end a prompt with a generation prompt. So the template
is rendered (as transformers renders it) on conversations with sentinel contents, the wrappers are cut out of the
text around the sentinels, and the result is checked by rendering further conversations both ways. A template
that is not of this shape (Llama 2's system-inside-the-first-turn, say) is refused rather than guessed at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from discopop_cli.core.errors import UserError

_SYSTEM, _USER1, _ASSISTANT1, _USER2, _ASSISTANT2, _USER3 = (
    "Xq7SYSTEMq7X",
    "Xq7USER1q7X",
    "Xq7ASSISTANT1q7X",
    "Xq7USER2q7X",
    "Xq7ASSISTANT2q7X",
    "Xq7USER3q7X",
)


@dataclass(frozen=True)
class TurnFormat:
    begin: str  # what the template writes once at the start (typically the bos token)
    wrappers: dict[str, tuple[str, str]]  # role -> (prefix, suffix); "system" only when the template has one
    generation_prompt: str  # what opens the assistant's reply

    @property
    def has_system(self) -> bool:
        return "system" in self.wrappers

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        parts = [self.begin]
        for message in messages:
            prefix, suffix = self.wrappers[message["role"]]
            parts += [prefix, message["content"], suffix]
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)


def _environment() -> Any:
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """transformers' `{% generation %}` marker (assistant-token masks); here it just renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    # The same environment options transformers' apply_chat_template uses, so whitespace renders identically.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env


def _split(text: str, before: str, sentinel: str, after_required: bool = True) -> tuple[str, str]:
    if text.count(sentinel) != 1:
        raise ValueError(f"{sentinel} rendered {text.count(sentinel)} times")
    head, _, tail = text.partition(sentinel)
    if not head.startswith(before):
        raise ValueError("the rendering does not continue the previous one")
    return head[len(before) :], tail


def read_turn_format(template: str, special_tokens: dict[str, str], model_dir: object) -> TurnFormat:
    """Infer the per-role wrappers of a Jinja chat template; refuse templates of another shape."""
    env = _environment()
    try:
        compiled = env.from_string(template)
    except Exception as exc:  # a template transformers could not compile either
        raise UserError(f"the chat template of {model_dir} does not compile: {exc}") from None

    def render(messages: list[tuple[str, str]], add_generation_prompt: bool = False) -> str:
        turns = [{"role": role, "content": content} for role, content in messages]
        return compiled.render(messages=turns, add_generation_prompt=add_generation_prompt, **special_tokens)

    refusal = (
        f"the chat template of {model_dir} does not wrap each message on its own (like ChatML, Llama 3 or Gemma), "
        "so it cannot be translated to an Ollama template"
    )
    try:
        one_turn = render([("user", _USER1)])
        bos = special_tokens.get("bos_token") or ""
        begin = bos if bos and one_turn.startswith(bos) else ""
        user_prefix, user_suffix = _split(one_turn, begin, _USER1)

        two_turns = render([("user", _USER1), ("assistant", _ASSISTANT1), ("user", _USER2)])
        _, rest = _split(two_turns, begin + user_prefix, _USER1)
        middle, rest = rest.split(_ASSISTANT1)
        assistant_middle, tail = rest.split(_USER2)
        if not middle.startswith(user_suffix) or not assistant_middle.endswith(user_prefix) or tail != user_suffix:
            raise ValueError("turns are not wrapped alike")
        assistant_prefix = middle[len(user_suffix) :]
        assistant_suffix = assistant_middle[: len(assistant_middle) - len(user_prefix)]

        prompted = render([("user", _USER1)], add_generation_prompt=True)
        if not prompted.startswith(one_turn):
            raise ValueError("the generation prompt is not appended")
        generation_prompt = prompted[len(one_turn) :]
    except Exception as exc:  # a ValueError from the checks above, or the template's own raise_exception
        raise UserError(f"{refusal} ({exc})") from None

    wrappers = {"user": (user_prefix, user_suffix), "assistant": (assistant_prefix, assistant_suffix)}
    try:
        with_system = render([("system", _SYSTEM), ("user", _USER1)])
    except Exception:
        with_system = ""  # no system turn (Gemma's own template raises on one): the Go template gets none either
    if _SYSTEM in with_system:
        first_turn = user_prefix + _USER1 + user_suffix
        try:
            system_prefix, rest = _split(with_system, begin, _SYSTEM)
        except ValueError:
            rest = ""
        if not rest.endswith(first_turn):
            # The system text goes somewhere other than a turn of its own (e.g. inside the first user turn).
            raise UserError(f"{refusal} (the system message is not a turn of its own)")
        wrappers["system"] = (system_prefix, rest[: len(rest) - len(first_turn)])
    turn_format = TurnFormat(begin, wrappers, generation_prompt)

    checks = [
        [("user", _USER1), ("assistant", _ASSISTANT1), ("user", _USER2), ("assistant", _ASSISTANT2), ("user", _USER3)],
        [("user", "two\nlines"), ("assistant", "ok"), ("user", "more")],
    ]
    if turn_format.has_system:
        checks.append([("system", _SYSTEM), ("user", _USER1), ("assistant", _ASSISTANT1), ("user", _USER2)])
    for conversation in checks:
        turns = [{"role": role, "content": content} for role, content in conversation]
        if render(conversation, True) != turn_format.render(turns, True):
            raise UserError(f"{refusal} (a {len(turns)}-message conversation renders differently)")
    return turn_format


def _go_literal(text: str) -> str:
    """Text as it goes into the Go template: raw where possible, a quoted Go string where braces would parse."""
    if "{{" in text or "}}" in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


def go_template(turn_format: TurnFormat, *, drop_begin: bool) -> str:
    """Ollama's template for the format: an optional system turn, the messages, then the generation prompt.

    Written without `{{-` trim markers, whose whitespace trimming would eat the newlines the wrappers end with.
    A trailing assistant message is left open (no suffix), so Ollama continues it instead of starting a turn.
    """
    lit = _go_literal
    user_prefix, user_suffix = turn_format.wrappers["user"]
    assistant_prefix, assistant_suffix = turn_format.wrappers["assistant"]
    parts = [] if drop_begin else [lit(turn_format.begin)]
    if turn_format.has_system:
        system_prefix, system_suffix = turn_format.wrappers["system"]
        parts.append(f"{{{{ if .System }}}}{lit(system_prefix)}{{{{ .System }}}}{lit(system_suffix)}{{{{ end }}}}")
    parts += [
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}",
        f'{{{{ if eq .Role "user" }}}}{lit(user_prefix)}{{{{ .Content }}}}{lit(user_suffix)}',
        f'{{{{ else if eq .Role "assistant" }}}}{lit(assistant_prefix)}{{{{ .Content }}}}',
        f"{{{{ if not $last }}}}{lit(assistant_suffix)}{{{{ end }}}}{{{{ end }}}}",
        f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(turn_format.generation_prompt)}{{{{ end }}}}',
        "{{ end }}",
    ]
    return "".join(parts)


def _tokens_in(text: str, special_texts: set[str]) -> list[str]:
    """The special tokens in `text`, in order of appearance."""
    found: list[tuple[int, str]] = []
    for token in special_texts:
        start = text.find(token)
        while start != -1:
            found.append((start, token))
            start = text.find(token, start + 1)
    return [token for _, token in sorted(found)]


def stop_strings(turn_format: TurnFormat, special_texts: set[str], bos_text: str | None) -> list[str]:
    """Turn-start tokens, then end-of-turn tokens: where a reply must stop (the seed's ["<|im_start|>", "<|im_end|>"])."""
    prefixes = "".join(prefix for prefix, _ in turn_format.wrappers.values()) + turn_format.generation_prompt
    suffixes = "".join(suffix for _, suffix in turn_format.wrappers.values())
    stops: list[str] = []
    for token in _tokens_in(prefixes, special_texts) + _tokens_in(suffixes, special_texts):
        if token not in stops and token != bos_text:
            stops.append(token)
    if not stops:
        # A plain-text format (e.g. "### Instruction:"): the next user header is where the reply ends.
        header = turn_format.wrappers["user"][0].strip()
        if header:
            stops.append(header.splitlines()[0])
    return stops


def end_of_turn_token(turn_format: TurnFormat, special_texts: set[str]) -> str | None:
    """The special token that closes an assistant turn (`<|im_end|>` for ChatML), if there is one."""
    tokens = _tokens_in(turn_format.wrappers["assistant"][1], special_texts)
    return tokens[0] if tokens else None
