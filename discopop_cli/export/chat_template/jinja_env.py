"""The Jinja side: chat templates rendered the way transformers' `apply_chat_template` renders them.

The same sandboxed environment and options (`trim_blocks`, `lstrip_blocks`, loop controls, the `{% generation %}`
block), the same globals (`raise_exception`, `strftime_now`) and the same variables (`messages`, `tools=None`,
`documents=None`, `add_generation_prompt`, the special tokens), so whitespace and branches come out identically
without importing transformers. `strftime_now` reads the clock as transformers does; each call is recorded, so the
Modelfile can say which date its template fixes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class NotTranslatable(Exception):
    """A chat template that has no faithful Ollama translation; the message says why, in a few words."""


@dataclass
class JinjaTemplate:
    """A compiled chat template and what rendering it touched."""

    compiled: Any
    special_tokens: dict[str, str]
    dates: list[str] = field(default_factory=list)  # what strftime_now returned, in call order

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return str(
            self.compiled.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        )


def _environment(dates: list[str]) -> Any:
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

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(date_format: str) -> str:
        text = datetime.now().strftime(date_format)
        dates.append(text)
        return text

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def compile_template(source: str, special_tokens: dict[str, str]) -> JinjaTemplate:
    """Compile as transformers does; a template that does not compile is not translatable either."""
    dates: list[str] = []
    try:
        compiled = _environment(dates).from_string(source)
    except Exception as exc:  # jinja2's TemplateSyntaxError, or an extension transformers lacks too
        raise NotTranslatable(f"it does not compile: {exc}") from None
    return JinjaTemplate(compiled, dict(special_tokens), dates)
