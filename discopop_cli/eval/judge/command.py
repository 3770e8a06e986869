"""`discopop eval judge`: answer the prompts with every model, judge the answers, report win rates or grades.

Every input is checked before the first answer is generated, and an OpenAI-compatible judge is asked whether it
is there: a misspelt URL is reported in a second, not after the answers. Then the run goes answer by answer and
judgement by judgement through the caches of `store`, so `--resume` after any interruption repeats nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice, warn
from discopop_cli.core.errors import RunFailure, UserError
from discopop_cli.core.locks import output_lock
from discopop_cli.core.outputs import check_apart, check_destination
from discopop_cli.eval.judge import answers as answering
from discopop_cli.eval.judge import judges, verdicts
from discopop_cli.eval.judge.prompts import Prompt, load_prompts, prompts_digest
from discopop_cli.eval.judge.store import JsonlCache, RunFolder, write_json

REPLY_KEPT = 2000  # characters of each judge reply kept in the cache, for reading what the judge said


@dataclass
class JudgeOptions:
    models: str
    prompts: str
    judge: judges.JudgeSettings
    mode: str = verdicts.PAIRWISE
    reference: str | None = None
    sampling: answering.Sampling = field(default_factory=answering.Sampling)
    output_dir: Path = Path("outputs/judge")
    resume: bool = False
    force: bool = False
    as_json: bool = False
    plot: Path | None = None


@dataclass
class Plan:
    sources: list[answering.ModelSource]
    prompts: list[Prompt]
    reference: str | None
    folder: RunFolder


def check_inputs(options: JudgeOptions) -> Plan:
    """Everything that can be wrong with the command line, found before anything is loaded or written."""
    if options.mode not in verdicts.MODES:
        raise UserError(f"--mode {options.mode!r}: use pairwise or single")
    sources = answering.parse_models(options.models)
    prompts = load_prompts(options.prompts)
    options.sampling.check()
    judges.parse_judge(options.judge)
    judges.api_key(options.judge, dict(os.environ))
    if options.judge.retries < 0 or options.judge.timeout <= 0 or options.judge.max_tokens < 1:
        raise UserError("--retries must be 0 or more, --timeout above 0 and --judge-max-tokens at least 1")
    reference = None
    if options.mode == verdicts.PAIRWISE:
        reference = _pick_reference(sources, options.reference)
    elif options.reference is not None:
        raise UserError("--reference applies to --mode pairwise only; drop it for single-answer grading")
    inputs = [("model", source.path) for source in sources] + [("prompts file", _file(options.prompts))]
    inputs.append(("judge model", _file(options.judge.spec.removeprefix("gguf:"))))
    check_apart(options.output_dir, inputs, "--output-dir")
    if options.plot is not None:
        if options.plot.suffix.lower() != ".png":
            raise UserError(f"--plot {options.plot}: the file must end in .png; give a name like judge.png")
        check_apart(options.plot, inputs, "--plot")
        check_destination(options.plot, force=options.force, what="--plot file")
    folder = RunFolder(options.output_dir)
    folder.check(resume=options.resume, force=options.force)
    return Plan(sources, prompts, reference, folder)


def _file(spec: str) -> Path | None:
    return Path(spec) if Path(spec).is_file() else None


def _pick_reference(sources: list[answering.ModelSource], wanted: str | None) -> str:
    if wanted is None:
        return sources[-1].name
    for source in sources:
        if wanted in (source.name, str(source.path)):
            return source.name
    names = ", ".join(s.name for s in sources)
    raise UserError(f"--reference {wanted!r} is not among --models ({names}); name one of them")


def run_judge(options: JudgeOptions) -> dict[str, Any]:
    plan = check_inputs(options)
    settings = {
        "prompts": prompts_digest(plan.prompts),
        "sampling": options.sampling.as_dict(),
        "models": {s.name: str(s.path.resolve()) for s in plan.sources},
    }
    settings = plan.folder.merged_settings(settings, resume=options.resume)
    judge_kind, _ = judges.parse_judge(options.judge)
    early_judge = judges.open_judge(options.judge, dict(os.environ)) if judge_kind == "openai" else None
    with output_lock(plan.folder.root, "eval judge"):
        plan.folder.check(resume=options.resume, force=options.force)  # again, holding the lock
        return _run(options, plan, settings, early_judge)


def _run(options: JudgeOptions, plan: Plan, settings: dict[str, Any], early_judge: Any) -> dict[str, Any]:
    plan.folder.start(settings, force=options.force)
    answers = {source.name: _answers(plan, source, options.sampling) for source in plan.sources}
    judge = early_judge or judges.open_judge(options.judge, dict(os.environ))
    try:
        cache = plan.folder.judgements(options.mode, judge.name)
        if options.mode == verdicts.PAIRWISE:
            _judge_pairs(judge, cache, plan, answers, options.judge)
        else:
            _grade(judge, cache, plan, answers, options.judge)
    finally:
        judge.close()
    from discopop_cli.eval.judge import report

    results = report.results(options.mode, judge.name, plan.prompts, answers, cache, plan.reference)
    write_json(plan.folder.root / "results.json", results)
    if not cache.done:
        last = next(reversed(cache.failed.values()), {}).get("error", "no judgement was made")
        raise RunFailure(
            f"the judge gave no verdict at all ({len(cache.failed)} failed; the last: {last}); check the judge, then "
            f"run the same command with --resume (the answers are kept in {plan.folder.root})"
        )
    report.show(results, as_json=options.as_json)
    if options.plot is not None:
        report.plot(results, options.plot)
        notice(f"wrote the chart to {options.plot}")
    return results


def _answers(plan: Plan, source: answering.ModelSource, sampling: answering.Sampling) -> dict[str, dict[str, Any]]:
    cache = plan.folder.answers(source.name)
    started = time.monotonic()

    def progress(i: int, total: int) -> None:
        if i == total or i % 10 == 0:
            notice(f"answers of {source.name}: {i}/{total} new ({time.monotonic() - started:.0f} s)")

    made = answering.answer_all(source, plan.prompts, sampling, cache, progress)
    if not made:
        notice(f"answers of {source.name}: all {len(plan.prompts)} from {cache.path}")
    return {p.id: cache.done[p.id] for p in plan.prompts}


def _record(cache: JsonlCache, key: str, label: str, ask: Any) -> None:
    """Run one judge call and append its verdict, or the reason it failed, to the cache."""
    try:
        value, reply, attempts = ask()
    except judges.ItemFailure as exc:
        cache.append({"key": key, "item": label, "error": str(exc)})
        warn(f"judgement of {label} failed: {exc}")
        return
    cache.append({"key": key, "item": label, "value": value, "attempts": attempts, "reply": reply[:REPLY_KEPT]})


def _pending(items: list[tuple[str, ...]], cache: JsonlCache) -> list[tuple[str, ...]]:
    """The (key, ...) items without a verdict in the cache: new ones, and those that failed before."""
    todo = [item for item in items if item[0] not in cache.done]
    if len(todo) < len(items):
        notice(f"judgements: {len(items) - len(todo)} of {len(items)} already in {cache.path}")
    return todo


def _judge_pairs(judge: judges.Judge, cache: JsonlCache, plan: Plan, answers: dict[str, Any], js: Any) -> None:
    """Both orders of every (candidate, prompt): the candidate shown first as A, then as B."""
    ref = plan.reference
    by_id = {p.id: p for p in plan.prompts}
    items = [
        (verdicts.pair_key(source.name, ref, p.id, order), source.name, p.id, order)
        for source in plan.sources
        if source.name != ref
        for p in plan.prompts
        for order in ("AB", "BA")
    ]
    todo = _pending(items, cache)
    for done, (key, candidate, prompt_id, order) in enumerate(todo, start=1):
        first, second = answers[candidate][prompt_id]["answer"], answers[ref][prompt_id]["answer"]
        if order == "BA":
            first, second = second, first
        messages = verdicts.pair_messages(by_id[prompt_id].text, first, second, as_json=js.as_json)
        label = f"{candidate} vs {ref} on {prompt_id} ({'candidate first' if order == 'AB' else 'reference first'})"
        _record(cache, key, label, lambda m=messages: judges.ask(judge, m, verdicts.PAIRWISE, verdicts.parse_pair, js))
        if done % 10 == 0 or done == len(todo):
            notice(f"judgements: {done}/{len(todo)} new")


def _grade(judge: judges.Judge, cache: JsonlCache, plan: Plan, answers: dict[str, Any], js: Any) -> None:
    items = [
        (verdicts.grade_key(source.name, p.id), source.name, p.id) for source in plan.sources for p in plan.prompts
    ]
    by_id = {p.id: p for p in plan.prompts}
    todo = _pending(items, cache)
    for done, (key, model, prompt_id) in enumerate(todo, start=1):
        messages = verdicts.single_messages(
            by_id[prompt_id].text, answers[model][prompt_id]["answer"], as_json=js.as_json
        )
        label = f"{model} on {prompt_id}"
        _record(cache, key, label, lambda m=messages: judges.ask(judge, m, verdicts.SINGLE, verdicts.parse_rating, js))
        if done % 10 == 0 or done == len(todo):
            notice(f"judgements: {done}/{len(todo)} new")
