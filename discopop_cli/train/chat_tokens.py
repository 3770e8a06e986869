"""Chat templates that bring their own tokens.

A recipe's chat template may write turn markers the base vocabulary lacks: google/gemma-7b's tokenizer spells
`<|im_start|>` as a dozen ordinary pieces, so the model would learn its turn structure from fragments that also
occur in text. Before training, every special-looking literal the template emits becomes one special token, the
embedding matrix grows to cover the tokenizer, the new rows start at the mean embedding (a point inside the
distribution the model already reads, where random rows would be outliers), and generation stops at the token
the template writes after each message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from discopop_cli.core.errors import UserError

# `<|im_start|>` (ChatML, Llama 3, Phi) and `<start_of_turn>` (Gemma) style markers. Plain `<b>`-like tags are
# left alone: a template that writes HTML means the text.
SPECIAL_LOOKING = re.compile(r"<\|[^\s<>|]+\|>|<[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+>")
# transformers' `{% generation %}` tag (assistant masks) emits nothing; plain Jinja does not know it.
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
_PROBE_REPLY = "discopop-probe-reply-7f3a"


def _parse(template: str) -> Any:
    import jinja2

    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    return environment.parse(_GENERATION_TAG.sub("", template))


def check_template(template: Any, source: str) -> None:
    """A recipe's chat_template must be a Jinja string; say where it is broken before any model is loaded."""
    import jinja2

    if not isinstance(template, str) or not template.strip():
        raise UserError(f"{source}: chat_template must be a Jinja template string, got {template!r}")
    try:
        _parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(
            f"{source}: chat_template is not valid Jinja (line {exc.lineno}: {exc.message}); fix it"
        ) from None


def template_tokens(template: str) -> list[str]:
    """The special-looking literals the template emits (text and string constants), in order of appearance."""
    import jinja2
    from jinja2 import nodes

    try:
        literals = [
            node.data if isinstance(node, nodes.TemplateData) else node.value
            for node in _parse(template).find_all((nodes.TemplateData, nodes.Const))
        ]
    except jinja2.TemplateSyntaxError:
        literals = [template]  # transformers may still render it (its own extensions); scan the source
    found = (token for text in literals if isinstance(text, str) for token in SPECIAL_LOOKING.findall(text))
    return list(dict.fromkeys(found))


def is_single_token(tokenizer: Any, token: str) -> bool:
    ids = tokenizer.encode(token, add_special_tokens=False)
    return len(ids) == 1 and ids[0] != tokenizer.unk_token_id


def end_of_turn_token(tokenizer: Any, candidates: list[str]) -> str | None:
    """The first of `candidates` (or eos) the template writes after an assistant message's content."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # a template may refuse this conversation (e.g. require a system turn); then no guess
        return None
    _, found, after = str(text).partition(_PROBE_REPLY)
    if not found:
        return None
    names = [*candidates, tokenizer.eos_token]
    positions = [(after.find(name), index) for index, name in enumerate(names) if name and name in after]
    return names[min(positions)[1]] if positions else None


@dataclass
class TemplateFit:
    """What fitting a template to a tokenizer and model changed."""

    added: dict[str, int] = field(default_factory=dict)
    rows_before: int = 0
    rows_after: int = 0
    end_of_turn: str | None = None
    stops_added: list[int] = field(default_factory=list)

    @property
    def new_ids(self) -> list[int]:
        return sorted(self.added.values())

    def summary(self) -> str | None:
        """The one line the user sees, or None when nothing changed."""
        parts = []
        if self.added:
            tokens = ", ".join(f"{token} (id {index})" for token, index in self.added.items())
            parts.append(f"added {tokens} as special tokens")
            if self.rows_after != self.rows_before:
                parts.append(f"embeddings resized {self.rows_before} -> {self.rows_after} rows")
            parts.append("new rows start at the mean embedding")
        if self.stops_added:
            parts.append(f"generation stops at {self.end_of_turn}")
        return "chat template: " + "; ".join(parts) if parts else None


def _embedding_layers(model: Any) -> list[Any]:
    """The input embedding and, when it is a separate matrix, the output projection."""
    layers = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != layers[0].weight.data_ptr():
        layers.append(output)
    return layers


def _mean_initialise(model: Any, ids: list[int], known_rows: int) -> None:
    import torch

    with torch.no_grad():
        for layer in _embedding_layers(model):
            weight = layer.weight
            mean = weight[:known_rows].float().mean(dim=0).to(weight.dtype)
            weight[ids] = mean


def _stop_at(model: Any, tokenizer: Any, token: str | None) -> list[int]:
    """Add the end-of-turn token to the generation config's eos ids; returns what was added."""
    generation = getattr(model, "generation_config", None)
    if token is None or generation is None:
        return []
    token_id = tokenizer.convert_tokens_to_ids(token)
    current = generation.eos_token_id
    ids = [] if current is None else [current] if isinstance(current, int) else list(current)
    if token_id in ids:
        return []
    generation.eos_token_id = [token_id, *ids]
    return [token_id]


def fit_template_tokens(model: Any, tokenizer: Any) -> TemplateFit:
    """Make every special-looking token of the tokenizer's chat template one special token the model can embed."""
    rows = model.get_input_embeddings().weight.shape[0]
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        return TemplateFit(rows_before=rows, rows_after=rows)
    tokens = template_tokens(template)
    missing = [token for token in tokens if not is_single_token(tokenizer, token)]
    # The mean is over rows of real tokens: rows past the tokenizer's end are padding nobody trained.
    known_rows = min(len(tokenizer), rows)
    fit = TemplateFit(rows_before=rows, rows_after=rows)
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        fit.added = {token: tokenizer.convert_tokens_to_ids(token) for token in missing}
        if len(tokenizer) > rows:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        fit.rows_after = model.get_input_embeddings().weight.shape[0]
        # A token that was already a (never-whole) piece keeps its trained row.
        fresh = [index for index in fit.new_ids if index >= known_rows]
        if fresh:
            _mean_initialise(model, fresh, known_rows)
    fit.end_of_turn = end_of_turn_token(tokenizer, tokens)
    fit.stops_added = _stop_at(model, tokenizer, fit.end_of_turn)
    return fit


def trainable_token_indices(model: Any, ids: list[int], fully_trained: list[str] | None = None) -> dict[str, list[int]]:
    """PEFT's `trainable_token_indices` that let a LoRA run learn the rows of new tokens.

    With tied embeddings PEFT trains the shared rows through the input embedding; an untied output projection
    needs its own rows, or the model could read the new tokens but never learn to write them. Layers the recipe
    already trains whole (`lora_modules_to_save`) are left to that.
    """
    names = {module: name for name, module in model.named_modules()}
    layers = [names[layer].rsplit(".", 1)[-1] for layer in _embedding_layers(model)]
    return {name: list(ids) for name in layers if name not in (fully_trained or [])}
