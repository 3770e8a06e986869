"""The module paths of discopop-cli 0.1, which was flat, kept importable under their new packages.

A plugin written as `from discopop_cli.loss_numerics import nll`, or a recipe naming
`discopop_cli.user_losses:...`, keeps working: the old name is the new module itself (the same object, so a
patch through either name reaches both), with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# 0.1's flat module -> its home since 0.2, both under discopop_cli. `losses`, `merge` and `data` kept their
# names (now packages); `recipes` became recipes.load, whose public names the package does not re-export.
MOVED = {
    "errors": "core.errors",
    "console": "core.console",
    "outputs": "core.outputs",
    "json_files": "core.json_files",
    "card": "core.model_card",
    "recipe_types": "recipes.types",
    "legacy": "recipes.legacy",
    "data_checks": "data.checks",
    "loss_numerics": "losses.numerics",
    "user_losses": "losses.user",
    "losses_cmd": "losses.command",
    "trainer": "train.injection",
    "training": "train.shared",
    "align": "train.align",
    "sft": "train.sft",
    "guard": "train.guard",
    "launch": "train.launch",
    "run_directory": "train.run_directory",
    "summary": "train.summary",
    "chat_tokens": "train.chat_tokens",
    "merge_card": "merge.card",
    "merge_inputs": "merge.inputs",
    "merge_plan": "merge.plan",
    "safetensors_stream": "merge.safetensors_stream",
    "tiny": "demo.tiny",
    "gguf_export": "export",
}
_ROOT = "discopop_cli."


def new_name(fullname: str) -> str | None:
    """The current path of a 0.1 module path (`discopop_cli.gguf_export.verify` included), else None."""
    if not fullname.startswith(_ROOT):
        return None
    head, _, rest = fullname[len(_ROOT) :].partition(".")
    if head not in MOVED:
        return None
    return _ROOT + MOVED[head] + (f".{rest}" if rest else "")


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.target}; import that instead", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old name's spec on the module; the module keeps its own.
        module.__spec__ = self.real_spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        current = new_name(fullname)
        if current is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(current))


def install() -> None:
    """Put the finder first, before the path finder could load a second copy of a moved submodule."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
