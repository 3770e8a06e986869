"""`discopop discover export DIR --name NAME`: the best candidate as an installable loss plugin.

The package advertises one function under the `discopop_cli.losses` entry-point group, so once it is installed
(`pip install FOLDER`) `discopop losses` lists NAME and a recipe can say `loss_type: NAME`. The function's
docstring opens with the formula (what `discopop losses` shows) and records the fitness it was found with.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from discopop_cli.core.console import out
from discopop_cli.core.errors import UserError
from discopop_cli.core.locks import claimed
from discopop_cli.core.outputs import check_apart, check_destination, staged_dir
from discopop_cli.discover import archive, fitness
from discopop_cli.discover.candidate import formula
from discopop_cli.losses.registry import PLUGIN_GROUP

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def run_export(folder: Path, *, name: str, candidate_id: str | None, output: Path | None, force: bool) -> None:
    entries = archive.require_archive(folder)
    _check_name(name)
    entry = _pick(entries, candidate_id)
    destination = output or folder / f"plugin-{name}"
    inputs = [("archive", folder / archive.ARCHIVE), ("discovery settings", folder / archive.SETTINGS)]
    check_apart(destination, inputs, "--output")
    check_destination(destination, force=force, what="plugin folder")
    with (
        claimed(destination, "discover export", force=force, what="plugin folder"),
        staged_dir(destination, command="discover export") as staging,
    ):
        _write_package(staging, name, entry, folder)
    out.print(
        f"[green]exported:[/] {entry['id']} (fitness {entry['fitness']:.4f}) as loss `{name}` -> {destination}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"install it with: pip install {destination}", highlight=False, soft_wrap=True)


def _check_name(name: str) -> None:
    from discopop_cli import losses

    if not _NAME.match(name):
        raise UserError(f"--name {name!r}: use lower-case letters, digits and _ (starting with a letter), e.g. my_loss")
    if name in losses.TRL_LOSS_TYPES or any(name in (s.name, *s.aliases) for s in losses.list_losses()):
        raise UserError(f"--name {name}: a loss of that name is already registered; choose another name")


def _pick(entries: list[dict[str, Any]], candidate_id: str | None) -> dict[str, Any]:
    ranked = archive.best(entries)
    if candidate_id is not None:
        for entry in ranked:
            if entry["id"] == candidate_id:
                return entry
        known = ", ".join(e["id"] for e in ranked[:5]) or "none"
        raise UserError(f"--id {candidate_id}: no scored candidate of that id (scored: {known})")
    if not ranked:
        raise UserError("the archive holds no scored candidate yet; run more generations before exporting")
    return ranked[0]


def _write_package(staging: Path, name: str, entry: dict[str, Any], folder: Path) -> None:
    package = f"discopop_loss_{name}"
    (staging / package).mkdir()
    (staging / package / "__init__.py").write_text(_module_text(name, entry, folder), encoding="utf-8")
    distribution = f"discopop-loss-{name.replace('_', '-')}"
    (staging / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{distribution}"
            version = "0.1.0"
            description = "A preference loss found by discopop discover (fitness {entry["fitness"]:.4f})"
            requires-python = ">=3.11"
            dependencies = ["torch"]

            [project.entry-points."{PLUGIN_GROUP}"]
            {name} = "{package}:{name}"

            [tool.setuptools]
            packages = ["{package}"]
            """
        ),
        encoding="utf-8",
    )
    (staging / "README.md").write_text(
        f"# {distribution}\n\nThe loss `{name}`, found by `discopop discover` ({entry['id']}, fitness "
        f"{entry['fitness']:.4f}).\n\n```bash\npip install .\ndiscopop losses\ndiscopop align RECIPE.yaml --set loss_type={name}\n```\n",
        encoding="utf-8",
    )


def _module_text(name: str, entry: dict[str, Any], folder: Path) -> str:
    found = formula(entry["code"])
    metrics = entry.get("metrics", {})
    details = (
        f"Found by `discopop discover` as {entry['id']} (generation {entry['generation']}, from {entry.get('origin')}) "
        f"in {folder}. Fitness {entry['fitness']:.4f}: {fitness.LABEL}; reward margin "
        f"{metrics.get('reward_margin', float('nan')):.4f} ({entry.get('fitness_method', fitness.METHOD)})."
    )
    thought = " ".join(str(entry.get("thought") or "").split())
    doc = "\n\n".join(
        p
        for p in (
            found,
            textwrap.fill(details, 100),
            textwrap.fill(f"Its author's thought: {thought}", 100) if thought else "",
        )
        if p
    )
    call = (
        "_candidate(_Owner(beta), policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
        "reference_rejected_logps)"
        if entry.get("form") == "paper"
        else "_candidate(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
        "reference_rejected_logps, beta=beta)"
    )
    return (
        f'"""{_escaped(doc)}\n"""\n\n'
        "# The candidate's code as it was checked and trained, unchanged:\n"
        f"{entry['code'].strip()}\n\n\n"
        f"_candidate = {entry['function']}\n\n\n"
        "class _Owner:\n"
        "    def __init__(self, beta):\n"
        "        self.beta = beta\n\n\n"
        f"def {name}(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta):\n"
        f'    """{_escaped(doc)}\n    """\n'
        f"    return {call}\n"
    )


def _escaped(text: str) -> str:
    """Text that can sit inside a triple-quoted docstring as it reads."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
