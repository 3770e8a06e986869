"""`discopop discover RECIPE --proposer P --generations N --out DIR`: propose, check, train, score, archive.

One candidate per generation. Everything the user typed is checked before the first candidate: the recipe (as
`align` would check it, with an eval split to score on), the proposer (the folder exists, the server answers), the
output folder (new, or `--resume`, or `--force`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from discopop_cli.core.console import notice, out
from discopop_cli.core.errors import UserError
from discopop_cli.core.locks import output_lock
from discopop_cli.core.outputs import check_apart, check_replaceable_folder, check_writable, mark, staged_file
from discopop_cli.discover import archive, fitness, sandbox, training
from discopop_cli.discover.candidate import Candidate, function_name
from discopop_cli.discover.proposers import Proposer, parse_proposer
from discopop_cli.discover.static import Rejected
from discopop_cli.discover.validate import digest_of, validate


def run_discover(
    recipe_path: Path,
    *,
    proposer_spec: str,
    generations: int,
    out_dir: Path,
    overrides: list[str],
    resume: bool,
    force: bool,
    api_key_env: str,
    temperature: float,
    max_tokens: int,
    keep_models: bool,
    train_timeout: float = 3600.0,
) -> None:
    if generations < 1:
        raise UserError(f"--generations {generations}: give at least 1")
    if not train_timeout > 0:
        raise UserError(f"--train-timeout {train_timeout:g}: give a number of seconds above 0")
    if resume and force:
        raise UserError("--resume and --force contradict each other; pass one")
    beta, inputs = _check_recipe(recipe_path, overrides)
    if proposer_spec.startswith("dir:"):
        inputs.append(("proposer folder", Path(proposer_spec[4:]).expanduser()))
    check_apart(out_dir, inputs, "--out")
    _check_out_dir(out_dir, resume=resume, force=force)
    proposer = parse_proposer(
        proposer_spec,
        api_key_env=api_key_env,
        fitness_label=fitness.LABEL,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    with output_lock(out_dir, "discover"):
        _check_out_dir(out_dir, resume=resume, force=force)  # again, holding the lock
        entries = archive.read(out_dir) if resume else []  # a damaged archive is refused before anything is written
        if force and out_dir.exists():
            shutil.rmtree(out_dir)  # discopop's own run: _check_out_dir made sure
        out_dir.mkdir(parents=True, exist_ok=True)
        mark(out_dir, "discover")
        settings = {"recipe": str(recipe_path), "proposer": proposer_spec, "overrides": overrides, "beta": beta}
        _write_settings(out_dir, settings, resume=resume)
        context = _Context(recipe_path, overrides, out_dir, beta, keep_models, train_timeout)
        _generations(proposer, proposer_spec, entries, generations, context)


def _generations(
    proposer: Proposer, proposer_spec: str, entries: list[dict[str, Any]], generations: int, context: _Context
) -> None:
    out_dir = context.folder
    for generation in range(len(entries) + 1, generations + 1):
        candidate = proposer.propose(entries, generation)
        if candidate is None:
            notice(f"{proposer_spec}: no new candidate; stopping after {len(entries)} generation(s)")
            break
        entry = _evaluate(candidate, generation, entries, context)
        archive.append(out_dir, entry)
        entries.append(entry)
        _say(entry)
    ranked = archive.best(entries)
    if ranked:
        top = ranked[0]
        out.print(
            f"[green]discovered:[/] {out_dir} ({len(entries)} candidate(s), {len(ranked)} scored; best {top['id']} "
            f"{escape(str(top.get('name') or ''))} fitness {top['fitness']:.4f})",
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print(f"[yellow]discovered:[/] {out_dir} ({len(entries)} candidate(s), none scored)", highlight=False)


class _Context:
    def __init__(
        self, recipe: Path, overrides: list[str], folder: Path, beta: float, keep_models: bool, train_timeout: float
    ) -> None:
        self.recipe, self.overrides, self.folder, self.beta = recipe, overrides, folder, beta
        self.keep_models, self.train_timeout = keep_models, train_timeout
        self.limits = sandbox.Limits()


def _check_recipe(recipe_path: Path, overrides: list[str]) -> tuple[float, list[tuple[str, Path]]]:
    """The recipe, as `align` checks it (discovery scores on its eval split, so it must have one): its beta, and
    what its runs read from disk."""
    from discopop_cli.recipes import load as recipes
    from discopop_cli.train import injection

    injection.check_trl()
    recipe = recipes.load_recipe(recipe_path, "align", overrides=[*overrides, "loss_kwargs=", "loss_weights="])
    if str(recipe.training.get("eval_strategy", "no")) == "no":
        raise UserError(
            f"{recipe_path.name}: discovery scores each candidate on held-out pairs, but eval_strategy is 'no'; "
            "set eval_strategy (e.g. epoch) and dataset_mixture.test_split_size"
        )
    return float(recipe.training.get("beta", 0.1)), recipes.local_inputs(recipe)


def _check_out_dir(folder: Path, *, resume: bool, force: bool) -> None:
    check_writable(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; choose a folder")
    has_content = folder.is_dir() and any(folder.iterdir())
    if resume:
        if not (folder / archive.SETTINGS).is_file():
            raise UserError(
                f"--resume: {folder} holds no discovery run ({archive.SETTINGS}); drop --resume to start one"
            )
        return
    if has_content and not force:
        raise UserError(
            f"--out {folder} already exists; pass --resume to continue its run, --force to start over, "
            "or choose another folder"
        )
    if has_content:
        check_replaceable_folder(folder, "--out folder")


def _write_settings(folder: Path, settings: dict[str, Any], *, resume: bool) -> None:
    path = folder / archive.SETTINGS
    if resume:
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in ("recipe", "proposer", "overrides") if before.get(k) != settings[k]]
        if changed:
            notice(f"--resume: {', '.join(changed)} differ from the run's start; the archive keeps both")
        return
    with staged_file(path) as partial:
        partial.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _evaluate(candidate: Candidate, generation: int, entries: list[dict[str, Any]], ctx: _Context) -> dict[str, Any]:
    started = time.monotonic()
    digest = digest_of(candidate)
    entry: dict[str, Any] = {
        "id": f"g{generation:03d}-{digest[:8]}",
        "generation": generation,
        "origin": candidate.origin,
        "name": candidate.name or function_name(candidate.code),
        "thought": candidate.thought,
        "code": candidate.code,
        "code_hash": digest,
    }
    try:
        passed = validate(candidate, digest, entries, beta=ctx.beta, limits=ctx.limits)
    except Rejected as exc:
        return {**entry, "status": "rejected", "stage": exc.stage, "reason": exc.reason, "seconds": _since(started)}
    entry["fingerprint"] = passed.fingerprint
    entry["form"] = "paper" if passed.checked.paper_form else "standard"
    entry["function"] = passed.checked.function
    run = training.train(
        ctx.recipe,
        ctx.overrides,
        ctx.folder,
        entry["id"],
        candidate.code,
        passed.checked.function,
        timeout=ctx.train_timeout,
    )
    if not run.ok:
        return {**entry, "status": "failed", "stage": "training", "reason": run.reason, "seconds": _since(started)}
    try:
        score = fitness.score(run.run_dir)
    except UserError as exc:
        return {**entry, "status": "failed", "stage": "scoring", "reason": str(exc), "seconds": _since(started)}
    finally:
        if not ctx.keep_models:
            training.drop_weights(run.run_dir)
    return {
        **entry,
        "status": "scored",
        "fitness": score.value,
        "fitness_method": score.method,
        "metrics": score.metrics,
        "train_seconds": round(run.seconds, 1),
        "seconds": _since(started),
    }


def _since(started: float) -> float:
    return round(time.monotonic() - started, 1)


def _say(entry: dict[str, Any]) -> None:
    label = f"generation {entry['generation']} {entry['id']} ({escape(str(entry.get('name') or entry['origin']))})"
    if entry["status"] == "scored":
        margin = entry["metrics"].get("reward_margin", 0.0)
        out.print(f"{label}: fitness {entry['fitness']:.4f}, reward margin {margin:.4f}", highlight=False)
    else:
        out.print(
            f"{label}: {entry['status']} at {entry['stage']}: {escape(entry['reason'])}",
            highlight=False,
            soft_wrap=True,
        )


# Re-exported for the command line's `--proposer` help and tests.
__all__ = ["Proposer", "run_discover"]
