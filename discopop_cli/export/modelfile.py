"""The files written beside the GGUF: an Ollama `Modelfile`, the `LICENSE` and, for Gemma derivatives, a `NOTICE`.

The Modelfile makes `ollama create NAME -f Modelfile` give a model that chats and stops right with nothing to edit:
FROM the GGUF beside it, the chat template translated to Go (with a comment line for each thing the translation
fixed or left out), stop tokens, the seed's sampling parameters for ChatML Gemma, an optional SYSTEM prompt and the
license text itself: for Gemma the Gemma Terms of Use (shipped in `licenses/`), else the model folder's LICENSE file
or its card's SPDX id with the license's URL.

Every value is written the way Ollama's Modelfile parser reads it. That parser knows no escapes: it strips one
pair of double quotes (or of triple ones) and keeps everything between them, and a value in single quotes ends at the end of its
line. So a PARAMETER value is written verbatim in double quotes, and one that cannot be (a line break, a character the parser
drops, a leading `""`) is refused rather than written wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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
    file_name: str = "Modelfile"  # its own name, for the `ollama create` line


def _triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise UserError(f'the {what} contains """, which a Modelfile cannot quote; remove it')
    return f'"""{text}"""'


def parameter_value(text: str) -> str:
    """A PARAMETER value as Ollama's parser reads it back: verbatim between `"`, on one line."""
    unreadable = not text or text.startswith('""') or any(not (ch.isprintable() or ch == "\t") for ch in text)
    if unreadable:
        raise ValueError(f"{text!r} cannot be written as one Modelfile PARAMETER value")
    return f'"{text}"'


def render_modelfile(spec: ModelfileSpec) -> str:
    lines = [
        f"# {spec.model_name}, exported by discopop-cli. Create the Ollama model with:",
        f"#   ollama create {spec.model_name} -f {spec.file_name}",
        *(f"# {note}" for note in spec.notes),
        f"FROM ./{spec.gguf_file_name}",
    ]
    if spec.template is not None:
        lines.append(f"TEMPLATE {_triple_quoted(spec.template, 'chat template')}")
    lines += [f"PARAMETER stop {parameter_value(stop)}" for stop in spec.stops]
    lines += [f"PARAMETER {key} {value}" for key, value in spec.parameters]
    if spec.system:
        lines.append(f"SYSTEM {_triple_quoted(spec.system, '--system text')}")
    if spec.license_text:
        lines.append(f"LICENSE {_triple_quoted(spec.license_text, 'license text')}")
    return "\n".join(lines) + "\n"


def seed_parameters(gemma: bool, stops: list[str]) -> tuple[tuple[str, str], ...]:
    """The seed's sampling parameters, for the model it describes: a Gemma chatting in ChatML."""
    return SEED_CHATML_GEMMA_PARAMETERS if gemma and all(stop in stops for stop in CHATML_STOPS) else ()


GEMMA_TERMS_FILE = "gemma-terms-of-use.txt"
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING")
SPDX_URL = "https://spdx.org/licenses/{}.html"
# Hugging Face card ids (lower case) -> SPDX ids, whose URLs are case-sensitive.
_SPDX_IDS = {
    spdx.lower(): spdx
    for spdx in ("Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0")
} | {"gpl-3.0": "GPL-3.0-only", "lgpl-3.0": "LGPL-3.0-only", "agpl-3.0": "AGPL-3.0-only", "cc0-1.0": "CC0-1.0"}


def gemma_terms_of_use() -> str:
    """The Gemma Terms of Use (last modified February 21, 2024) as the model page shows them."""
    return resources.files("discopop_cli.export").joinpath("licenses", GEMMA_TERMS_FILE).read_text("utf-8").strip()


def _card_license(model_dir: Path) -> str | None:
    """The `license:` of the model card's front matter (README.md), if any."""
    card = model_dir / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    found = re.search(r"^license:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front.group(1), re.M) if front else None
    return found.group(1) if found else None


def license_text(model_dir: Path, gemma: bool) -> str | None:
    """What a recipient of the model must get: the license text itself, or at least its SPDX id and URL."""
    if gemma:
        return gemma_terms_of_use()
    for name in LICENSE_FILES:
        path = model_dir / name
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace").strip() or None
    card = _card_license(model_dir)
    spdx = _SPDX_IDS.get(card.lower()) if card else None
    if spdx:
        return f"SPDX-License-Identifier: {spdx}\n{SPDX_URL.format(spdx)}"
    if card and card.lower() not in ("other", "unknown"):
        return f"License: {card} (as the model card names it; no license file came with the model)"
    return None


def gemma_notice(model_name: str) -> str:
    """The NOTICE file: the required notice verbatim, then where the terms and use restrictions are."""
    return (
        f"{GEMMA_NOTICE}\n"
        "\n"
        f"{model_name} is a Model Derivative of Gemma, converted to GGUF by discopop-cli. Its use is subject to\n"
        f"the use restrictions of section 3.2 of the Gemma Terms of Use ({GEMMA_TERMS_URL}), including the Gemma\n"
        f"Prohibited Use Policy ({GEMMA_PROHIBITED_USE_URL}); pass them on to anyone you distribute it to.\n"
    )
