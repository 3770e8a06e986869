"""`discopop eval judge`: answer the prompts with every model, judge the answers, report win rates or grades.

Every input is checked before the first answer is generated, and an OpenAI-compatible judge is asked whether it
is there: a misspelt URL is reported in a second, not after the answers. Then the run goes answer by answer and
judgement by judgement through the caches of `store`, so `--resume` after any interruption repeats nothing.

The prompt set decides the protocol: plain prompts and AlpacaEval instructions get one answer each, MT-Bench
questions a two-turn conversation judged turn by turn with FastChat's judge prompts (`mtbench`). Judge calls go
out `--concurrency` at a time to an OpenAI-compatible judge; each verdict is appended to the cache by this thread
as it arrives, so the cache, `--resume` and the figures do not depend on the order in which they come back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from discopop_cli.core.console import notice, warn
from discopop_cli.core.errors import RunFailure, UserError
from discopop_cli.core.locks import output_lock
from discopop_cli.core.outputs import check_apart, check_destination, staged_file
from discopop_cli.eval.judge import alpaca, judges, mtbench, verdicts
from discopop_cli.eval.judge import answers as answering
from discopop_cli.eval.judge.prompts import MT_BENCH, Prompt, PromptSet, load_prompt_set, prompts_digest
from discopop_cli.eval.judge.store import JsonlCache, RunFolder, slug, write_json

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
    judge_prompts: Path | None = None  # MT-Bench: FastChat's judge_prompts.jsonl
    reference_answers: Path | None = None  # MT-Bench: FastChat's reference_answer/gpt-4.jsonl
    concurrency: int = 4
    alpaca_eval: bool = False  # also run alpaca_eval's own annotator and metrics on the answers


@dataclass
class Plan:
    sources: list[answering.ModelSource]
    prompt_set: PromptSet
    reference: str | None
    folder: RunFolder
    sampling: answering.Sampling
    judge_prompts: dict[str, mtbench.JudgePrompt] = field(default_factory=dict)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def prompts(self) -> list[Prompt]:
        return self.prompt_set.prompts

    @property
    def mt_bench(self) -> bool:
        return self.prompt_set.kind == MT_BENCH


def check_inputs(options: JudgeOptions) -> Plan:
    """Everything that can be wrong with the command line, found before anything is loaded or written."""
    if options.mode not in verdicts.MODES:
        raise UserError(f"--mode {options.mode!r}: use pairwise or single")
    sources = answering.parse_models(options.models)
    prompt_set = load_prompt_set(options.prompts)
    sampling = options.sampling
    if sampling.max_new_tokens is None:
        tokens = mtbench.MAX_NEW_TOKENS if prompt_set.kind == MT_BENCH else answering.MAX_NEW_TOKENS
        sampling = replace(sampling, max_new_tokens=tokens)
    sampling.check()
    judges.parse_judge(options.judge)
    judges.api_key(options.judge, dict(os.environ))
    if options.judge.retries < 0 or options.judge.timeout <= 0 or options.judge.max_tokens < 1:
        raise UserError("--retries must be 0 or more, --timeout above 0 and --judge-max-tokens at least 1")
    if options.concurrency < 1:
        raise UserError(f"--concurrency {options.concurrency}: must be at least 1 (1 sends one request at a time)")
    reference = None
    if options.mode == verdicts.PAIRWISE:
        reference = _pick_reference(sources, options.reference)
    elif options.reference is not None:
        raise UserError("--reference applies to --mode pairwise only; drop it for single-answer grading")
    judge_prompts, references = {}, {}
    if prompt_set.kind == MT_BENCH:
        if options.judge_prompts is None:
            raise UserError(
                f"--prompts {options.prompts} holds MT-Bench questions: give FastChat's judge prompts with "
                "--judge-prompts judge_prompts.jsonl"
            )
        judge_prompts = mtbench.load_judge_prompts(options.judge_prompts, options.mode, prompt_set.prompts)
        references = mtbench.load_reference_answers(options.reference_answers, prompt_set.prompts)
    elif options.judge_prompts is not None or options.reference_answers is not None:
        raise UserError(
            "--judge-prompts and --reference-answers apply to MT-Bench questions only (FastChat's question.jsonl)"
        )
    if options.alpaca_eval:
        if options.mode != verdicts.PAIRWISE or prompt_set.kind == MT_BENCH:
            raise UserError(
                "--alpaca-eval compares single-turn answers pairwise; drop it for --mode single or MT-Bench"
            )
        if judges.parse_judge(options.judge)[0] != "openai":
            raise UserError("--alpaca-eval runs alpaca_eval's annotator over HTTP: give an openai:MODEL@URL judge")
        alpaca.check_available()
    for source in sources:
        if source.is_outputs:
            alpaca.OutputsFile(source.path).check_covers(prompt_set.prompts)
    inputs = [("model", source.path) for source in sources] + [("prompts file", _file(options.prompts))]
    inputs.append(("judge model", _file(options.judge.spec.removeprefix("gguf:"))))
    inputs += [("judge prompts", options.judge_prompts), ("reference answers", options.reference_answers)]
    check_apart(options.output_dir, inputs, "--output-dir")
    if options.plot is not None:
        if options.plot.suffix.lower() != ".png":
            raise UserError(f"--plot {options.plot}: the file must end in .png; give a name like judge.png")
        check_apart(options.plot, inputs, "--plot")
        check_destination(options.plot, force=options.force, what="--plot file")
    folder = RunFolder(options.output_dir)
    folder.check(resume=options.resume, force=options.force)
    return Plan(sources, prompt_set, reference, folder, sampling, judge_prompts, references)


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
    settings: dict[str, Any] = {
        "prompts": prompts_digest(plan.prompts),
        "sampling": plan.sampling.as_dict(),
        "models": {s.name: str(s.path.resolve()) for s in plan.sources},
    }
    if plan.mt_bench:
        settings["temperatures"] = mtbench.TEMPERATURES
    settings = plan.folder.merged_settings(settings, resume=options.resume)
    judge_kind, _ = judges.parse_judge(options.judge)
    early_judge = judges.open_judge(options.judge, dict(os.environ)) if judge_kind == "openai" else None
    with output_lock(plan.folder.root, "eval judge"):
        plan.folder.check(resume=options.resume, force=options.force)  # again, holding the lock
        return _run(options, plan, settings, early_judge)


def _run(options: JudgeOptions, plan: Plan, settings: dict[str, Any], early_judge: Any) -> dict[str, Any]:
    plan.folder.start(settings, force=options.force)
    answers = {source.name: _answers(plan, source) for source in plan.sources}
    _export_answers(plan, answers)
    judge = early_judge or judges.open_judge(options.judge, dict(os.environ))
    concurrency = options.concurrency
    if concurrency > 1 and not judge.concurrent:
        notice(f"{judge.name} answers one request at a time in this process: --concurrency {concurrency} ignored")
        concurrency = 1
    try:
        cache = plan.folder.judgements(options.mode, judge.name)
        if options.mode == verdicts.PAIRWISE:
            jobs = _pair_jobs(plan, answers, options.judge.as_json)
        else:
            jobs = _grade_jobs(plan, answers, options.judge.as_json)
        _run_jobs(judge, cache, jobs, options.judge, concurrency)
    finally:
        judge.close()
    from discopop_cli.eval.judge import report

    results = report.results(options.mode, judge.name, plan.prompt_set, answers, cache, plan.reference)
    write_json(plan.folder.root / "results.json", results)
    if not cache.done:
        last = next(reversed(cache.failed.values()), {}).get("error", "no judgement was made")
        raise RunFailure(
            f"the judge gave no verdict at all ({len(cache.failed)} failed; the last: {last}); check the judge, then "
            f"run the same command with --resume (the answers are kept in {plan.folder.root})"
        )
    if options.mode == verdicts.PAIRWISE and not plan.mt_bench:
        for model in results["models"]:
            rows = alpaca.annotations(
                model["model"], results["reference"], judge.name, plan.prompts, answers, model["outcomes"]
            )
            path = alpaca.annotations_path(plan.folder.root, model["model"], results["reference"], judge.name)
            write_json(path, rows)
    if options.alpaca_eval:
        _, (model, url) = judges.parse_judge(options.judge)
        key = judges.api_key(options.judge, dict(os.environ))
        candidates = [m["model"] for m in results["models"]]
        notice(f"alpaca_eval: its annotator {alpaca.ANNOTATOR} through {url}, then its metrics")
        assert plan.reference is not None
        figures = alpaca.run_alpaca_eval(plan.folder.root, candidates, plan.reference, model, url, key, concurrency)
        results["alpaca_eval"] = figures
        write_json(plan.folder.root / "results.json", results)
    report.show(results, as_json=options.as_json)
    if options.plot is not None:
        report.plot(results, options.plot)
        notice(f"wrote the chart to {options.plot}")
    return results


def _answers(plan: Plan, source: answering.ModelSource) -> dict[str, dict[str, Any]]:
    cache = plan.folder.answers(source.name)
    started = time.monotonic()

    def progress(i: int, total: int) -> None:
        if i == total or i % 10 == 0:
            notice(f"answers of {source.name}: {i}/{total} new ({time.monotonic() - started:.0f} s)")

    temperatures = mtbench.TEMPERATURES if plan.mt_bench else None
    made = answering.answer_all(source, plan.prompts, plan.sampling, cache, progress, temperatures)
    if not made:
        notice(f"answers of {source.name}: all {len(plan.prompts)} from {cache.path}")
    return {p.id: cache.done[p.id] for p in plan.prompts}


def _export_answers(plan: Plan, answers: dict[str, dict[str, dict[str, Any]]]) -> None:
    """The answers in the formats the benchmarks' own tools read: FastChat's model_answer for MT-Bench questions,
    AlpacaEval's model_outputs.json for single-turn sets."""
    root = plan.folder.root
    if plan.mt_bench:
        for name, by_id in answers.items():
            rows = mtbench.model_answer_rows(name, plan.prompts, by_id)
            path = root / "mt_bench" / "model_answer" / f"{slug(name)}.jsonl"
            with staged_file(path) as partial:
                partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        alpaca.write_model_outputs(root, plan.prompts, answers)


@dataclass(frozen=True)
class Job:
    """One judge call: its cache key, what the progress and warnings call it, and what is sent."""

    key: str
    label: str
    messages: list[dict[str, str]]
    mode: str
    parse: Callable[[str], Any]


def _pair_jobs(plan: Plan, answers: dict[str, Any], as_json: bool) -> list[Job]:
    """Both orders of every (candidate, prompt[, turn]): the candidate shown first as A, then as B."""
    ref = plan.reference
    assert ref is not None
    jobs = []
    for source in plan.sources:
        if source.name == ref:
            continue
        for p in plan.prompts:
            mine, theirs = _turns(answers[source.name][p.id]), _turns(answers[ref][p.id])
            for turn in range(1, len(p.all_turns) + 1):
                for order in ("AB", "BA"):
                    first, second = (mine, theirs) if order == "AB" else (theirs, mine)
                    shown = "candidate first" if order == "AB" else "reference first"
                    if plan.mt_bench:
                        prompt = plan.judge_prompts[mtbench.prompt_name(verdicts.PAIRWISE, p.category, turn)]
                        reference = plan.references.get(p.id, ())
                        messages = mtbench.pair_messages(prompt, p, first, second, turn, reference, as_json)
                        key = mtbench.pair_key(source.name, ref, p.id, turn, order)
                        label = f"{source.name} vs {ref} on {p.id} turn {turn} ({shown})"
                        jobs.append(Job(key, label, messages, verdicts.PAIRWISE, mtbench.parse_verdict))
                    else:
                        messages = verdicts.pair_messages(p.text, first[0], second[0], as_json=as_json)
                        key = verdicts.pair_key(source.name, ref, p.id, order)
                        label = f"{source.name} vs {ref} on {p.id} ({shown})"
                        jobs.append(Job(key, label, messages, verdicts.PAIRWISE, verdicts.parse_pair))
    return jobs


def _grade_jobs(plan: Plan, answers: dict[str, Any], as_json: bool) -> list[Job]:
    jobs = []
    for source in plan.sources:
        for p in plan.prompts:
            mine = _turns(answers[source.name][p.id])
            if not plan.mt_bench:
                messages = verdicts.single_messages(p.text, mine[0], as_json=as_json)
                key, label = verdicts.grade_key(source.name, p.id), f"{source.name} on {p.id}"
                jobs.append(Job(key, label, messages, verdicts.SINGLE, verdicts.parse_rating))
                continue
            for turn in range(1, len(p.all_turns) + 1):
                prompt = plan.judge_prompts[mtbench.prompt_name(verdicts.SINGLE, p.category, turn)]
                reference = plan.references.get(p.id, ())
                messages = mtbench.single_messages(prompt, p, mine, turn, reference, as_json)
                key, label = mtbench.grade_key(source.name, p.id, turn), f"{source.name} on {p.id} turn {turn}"
                jobs.append(Job(key, label, messages, verdicts.SINGLE, mtbench.parse_rating))
    return jobs


def _turns(answer: dict[str, Any]) -> list[str]:
    return list(answer.get("turns") or [answer["answer"]])


def _attempt(judge: judges.Judge, job: Job, settings: judges.JudgeSettings) -> dict[str, Any]:
    """One judge call with its retries, as the cache line to append (a verdict, or the error it ended with).
    Raises RunFailure when the server stayed unreachable."""
    try:
        value, reply, attempts = judges.ask(judge, job.messages, job.mode, job.parse, settings)
    except judges.ItemFailure as exc:
        return {"key": job.key, "item": job.label, "error": str(exc)}
    return {"key": job.key, "item": job.label, "value": value, "attempts": attempts, "reply": reply[:REPLY_KEPT]}


def _record(cache: JsonlCache, line: dict[str, Any]) -> None:
    cache.append(line)
    if "error" in line:
        warn(f"judgement of {line['item']} failed: {line['error']}")


def _run_jobs(
    judge: judges.Judge, cache: JsonlCache, jobs: list[Job], settings: judges.JudgeSettings, concurrency: int
) -> None:
    """The jobs without a verdict in the cache (new ones, and those that failed before), `concurrency` in flight.
    When the server goes away, no new call starts; the calls in flight are recorded before the run stops."""
    todo = [job for job in jobs if job.key not in cache.done]
    if len(todo) < len(jobs):
        notice(f"judgements: {len(jobs) - len(todo)} of {len(jobs)} already in {cache.path}")

    def progress(done: int) -> None:
        if done % 10 == 0 or done == len(todo):
            notice(f"judgements: {done}/{len(todo)} new")

    if concurrency == 1:
        for done, job in enumerate(todo, start=1):
            _record(cache, _attempt(judge, job, settings))
            progress(done)
        return
    failure: RunFailure | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
    try:
        futures = [pool.submit(_attempt, judge, job, settings) for job in todo]
        done = 0
        for future in as_completed(futures):
            try:
                line = future.result()
            except CancelledError:
                continue
            except RunFailure as exc:
                if failure is None:
                    failure = exc
                    for other in futures:
                        other.cancel()
                continue
            done += 1
            _record(cache, line)
            progress(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure
