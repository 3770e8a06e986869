"""YAML read safely: PyYAML's safe loader, without aliases and with nesting bounded.

The safe loader builds no objects, but it still expands aliases (nine lines of `&a [*b, *b, ...]` become billions
of nodes: a recipe like that ran 109 s into a MemoryError, before any key was checked) and composes nested
collections recursively (50,000 levels of `[[[...]]]` end in a RecursionError). Recipes and model cards need
neither: an alias, or nesting deeper than `MAX_DEPTH`, is refused while composing, before anything is expanded.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64


class YamlRefused(ValueError):
    """YAML this project will not expand; the message says why and where."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlRefused(
                f"line {event.start_mark.line + 1} uses the alias *{event.anchor}; aliases are not read here, "
                "write the value out in full"
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise YamlRefused(f"line {mark.line + 1} nests deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_text(text: str) -> Any:
    """The YAML document in `text`; YamlRefused for an alias or deep nesting, yaml.YAMLError for bad syntax."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
