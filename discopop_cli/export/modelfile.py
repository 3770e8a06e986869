"""The files written beside the GGUF: an Ollama `Modelfile` and, for Gemma derivatives, a `NOTICE`.

The Modelfile makes `ollama create NAME -f Modelfile` give a model that chats and stops right with nothing to edit:
FROM the GGUF beside it, the chat template translated to Go (with a comment line for each thing the translation
fixed or left out), stop tokens, the seed's sampling parameters for
ChatML Gemma, an optional SYSTEM prompt and, for Gemma, the license reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from discopop_cli.core.errors import UserError
from discopop_cli.core.model_card import (
    GEMMA_NOTICE,
)  # the notice the Gemma Terms of Use (3.1) require with distributions

GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_PROHIBITED_USE_URL = "https://ai.google.dev/gemma/prohibited_use_policy"

CHATML_STOPS = ("<|im_start|>", "<|im_end|>")
# The seed's published parameters (shared/seed/): greedy-friendly, newline not penalised.
SEED_CHATML_GEMMA_PARAMETERS = (("penalize_newline", "false"), ("repeat_penalty", "1"))


@dataclass(frozen=True)
class ModelfileSpec:
    gguf_file_name: str  # FROM ./<this>: relative, so the folder can move as a whole
    model_name: str
    template: str | None  # None: the chat template has no Go translation, Ollama reads the GGUF's own
    stops: list[str]
    parameters: tuple[tuple[str, str], ...] = ()
    system: str | None = None
    license_text: str | None = None
    notes: tuple[str, ...] = ()  # comment lines: what the template translation fixed or left out


def _triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise UserError(f'the {what} contains """, which a Modelfile cannot quote; remove it')
    return f'"""{text}"""'


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_modelfile(spec: ModelfileSpec) -> str:
    lines = [
        f"# {spec.model_name}, exported by discopop-cli. Create the Ollama model with:",
        f"#   ollama create {spec.model_name} -f Modelfile",
        *(f"# {note}" for note in spec.notes),
        f"FROM ./{spec.gguf_file_name}",
    ]
    if spec.template is not None:
        lines.append(f"TEMPLATE {_triple_quoted(spec.template, 'chat template')}")
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in spec.stops]
    lines += [f"PARAMETER {key} {value}" for key, value in spec.parameters]
    if spec.system:
        lines.append(f"SYSTEM {_triple_quoted(spec.system, '--system text')}")
    if spec.license_text:
        lines.append(f"LICENSE {_triple_quoted(spec.license_text, 'license text')}")
    return "\n".join(lines) + "\n"


def seed_parameters(gemma: bool, stops: list[str]) -> tuple[tuple[str, str], ...]:
    """The seed's sampling parameters, for the model it describes: a Gemma chatting in ChatML."""
    return SEED_CHATML_GEMMA_PARAMETERS if gemma and all(stop in stops for stop in CHATML_STOPS) else ()


def gemma_license_reference() -> str:
    return (
        f"Gemma Terms of Use: {GEMMA_TERMS_URL}\n"
        f"Gemma Prohibited Use Policy: {GEMMA_PROHIBITED_USE_URL}\n"
        f"{GEMMA_NOTICE}"
    )


def gemma_notice(model_name: str) -> str:
    """The NOTICE file: the required notice verbatim, then where the terms and use restrictions are."""
    return (
        f"{GEMMA_NOTICE}\n"
        "\n"
        f"{model_name} is a Model Derivative of Gemma, converted to GGUF by discopop-cli. Its use is subject to\n"
        f"the use restrictions of section 3.2 of the Gemma Terms of Use ({GEMMA_TERMS_URL}), including the Gemma\n"
        f"Prohibited Use Policy ({GEMMA_PROHIBITED_USE_URL}); pass them on to anyone you distribute it to.\n"
    )
