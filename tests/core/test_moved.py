"""0.1's flat module paths still import, as the very modules that replaced them, with a warning naming the new path."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discopop_cli.cli import app
from discopop_cli.core.moved import MOVED, new_name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_is_the_new_module(old: str) -> None:
    new = importlib.import_module(new_name(f"discopop_cli.{old}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(f"discopop_cli.{old}", None)
        aliased = importlib.import_module(f"discopop_cli.{old}")
    assert aliased is new
    assert new.__spec__.name == new.__name__  # the module keeps its own name and spec
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert messages == [f"discopop_cli.{old} moved to {new.__name__}; import that instead"]


def test_submodules_of_a_moved_package_are_not_loaded_twice() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from discopop_cli.gguf_export.quants import quant_type\n"
        "import discopop_cli.export.quants as q\n"
        "assert q.quant_type is quant_type\n"
        "print(sorted(k for k in sys.modules if k.endswith('.quants')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['discopop_cli.export.quants', 'discopop_cli.gguf_export.quants']"


def test_unknown_names_are_not_invented() -> None:
    assert new_name("discopop_cli.cli") is None
    assert new_name("discopop_cli.losses.paper") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("discopop_cli.no_such_module")


PLUGIN = textwrap.dedent(
    '''
    from discopop_cli.loss_numerics import margin, nll  # 0.1's path, as a plugin of that time wrote it


    def old_style(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                  *, beta, k: float = 1.0):
        """L = k * (-log sig(x))"""
        d = margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        return k * nll(beta * d)
    '''
)


def test_a_plugin_written_against_0_1_still_trains_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tiny_dataset_path: Path
) -> None:
    (tmp_path / "old_plugin_0_1.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {tiny_model_dir}\n"
        f"dataset_mixture: {{datasets: [{{id: {tiny_dataset_path}}}]}}\n"
        "loss_type: [old_plugin_0_1:old_style, discopop_cli.losses:cell]\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    result = CliRunner().invoke(app, ["align", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "old_plugin_0_1:old_style x 1.0 [discopop-cli] (k=1.0)" in flat
    assert "discopop_cli.losses:cell x 1.0" in flat
    assert not (tmp_path / "out").exists()
    sys.modules.pop("old_plugin_0_1", None)
