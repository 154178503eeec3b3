"""One Ray Tune trial: load the task, build the LMs, evaluate the baseline, compile, evaluate, log, report.

`run_trial(config)` is the Tune trainable. `execute_trial(config)` is the same work without Tune, for tests
and scripts. A trial whose key already has a finished MLflow run returns that run's metrics and makes no LM call.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from trainables import (
    ablation,
    adapters,
    baselines,
    lm_cache,
    ollama_node,
    publish,
    sandbox,
    slots,
    tracing,
    tracking,
)
from trainables.errors import ArbError
from trainables.evaluate import EvalResult, evaluate, joined
from trainables.lm import Meter, build_lm, drop_meter, new_meter
from trainables.optimizers import COMPILERS, CompileRequest
from trainables.registry import ModelEntry, ModelRegistry, load_registry
from trainables.sequential import Decision, StopRule, check
from trainables.stats import PairedDelta, outcome_label, paired_delta
from trainables.tasks import Splits, Task, get_task
from trainables.timing import Phases
from trainables.vocabulary import Trial

log = logging.getLogger(__name__)


class Runtime(BaseModel):
    """Where a trial runs, as opposed to what it computes: none of this is part of the trial key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str
    experiment_id: str
    registry_path: str | None = None
    registry: dict[str, Any] | None = None
    """The registry the driver validated, as data (it holds names of key variables, never keys); wins over the path,
    so workers on other nodes use exactly the models the driver checked."""

    def model_registry(self) -> ModelRegistry:
        if self.registry is not None:
            return ModelRegistry.model_validate(self.registry)
        return load_registry(self.registry_path)

    endpoints: dict[str, str] = Field(default_factory=dict)
    """Base URLs that override the registry per model name (the embedded servers' ports are chosen at run time)."""
    timeouts: dict[str, float] = Field(default_factory=dict)
    """Per-call timeouts (seconds) that override the registry per model name: for the embedded servers, set from
    their measured speed and `max_tokens` (`grid.embedded.call_timeout`)."""
    versions: dict[str, str] = Field(default_factory=dict)
    """What each overridden endpoint serves (`grid.embedded.served_identity`): the LM cache's key for its answers."""


class TrialFailed(RuntimeError):
    """What a failed trial hands to Ray: one line (class, message, MLflow run). The full traceback is kept with the
    run (artifact `error.txt`); some client exceptions cannot even be rebuilt by Ray on the driver."""


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune trainable: execute the trial and report its metrics once."""
    from ray import tune

    try:
        metrics = execute_trial(config)
    except Exception as exc:
        where = " ".join(getattr(exc, "__notes__", []))
        message = " ".join(tracking.redact(str(exc)).split())[:300]
        raise TrialFailed(f"{type(exc).__name__}: {message}" + (f" ({where})" if where else "")) from None
    tune.report(metrics)


def execute_trial(config: dict[str, Any]) -> dict[str, float]:
    """Run (or reuse) one trial and return its metrics and, as `time_*`, where its time went (`trainables.timing`).

    `config` holds the trial, its runtime, and from the searcher: `concurrency` (requests the trial may have in
    flight at once: the share of its node's slots it holds) and `suggested_at` (when it was handed out)."""
    phases = Phases(config.get("suggested_at"))
    trial = Trial.model_validate(config["trial"])
    runtime = Runtime.model_validate(config["runtime"])
    concurrency = max(1, int(config.get("concurrency") or 1))
    client = MlflowClient(runtime.tracking_uri)
    registry = runtime.model_registry()

    with phases.phase("setup"):
        run_id, done = tracking.open_run(
            client,
            runtime.experiment_id,
            trial.key,
            trial.run_name,
            {"arb.phase": trial.phase, "arb.grid": trial.grid, "arb.task_version": trial.task_version},
            {**_params(trial), "provider": registry.get(trial.model).provider},
        )
        if done is not None:
            log.info("trial %s already finished in run %s; nothing to do", trial.key, run_id)
            if done.info.status != "FINISHED":  # a run finished by a process killed before it closed the run
                client.set_terminated(run_id, status="FINISHED")
    if done is not None:
        failed = done.data.tags.get(tracking.TAG_STATUS) == tracking.COMPILE_FAILED
        return {**done.data.metrics, "reused": 1.0, "compile_failed": float(failed), **phases.report()}
    pace = Pace(concurrency, phases, slots.allowance(config.get("slot_id"), concurrency))
    try:
        # the trace export is awaited with the other background writes, not before them
        with tracing.recording(runtime.tracking_uri, runtime.experiment_id, (run_id, trial.run_name), trial.traces,
                               trial.trace_sample, pace.later) as evals:  # fmt: skip
            status, metrics, artifacts, tags = _work(trial, runtime, registry, evals, pace)
    except BaseException as exc:
        pace.close()
        tracking.mark_errored(client, run_id, exc)
        exc.add_note(f"MLflow run {run_id}")
        raise
    try:
        with phases.phase("finish"):
            pace.later(lambda: tracking.upload_artifacts(client, run_id, artifacts))
            tags.update(pace.settle())
            tracking.commit(client, run_id, status=status, metrics=metrics, tags=tags)
    except BaseException as exc:
        # A full disk or a lost store mid-write: the status tag was not written, so the run is not taken for
        # finished; say why if the store still takes a write, and let the retry or resume redo the trial.
        with contextlib.suppress(Exception):
            tracking.mark_errored(client, run_id, exc)
        raise
    # `reused`, `compile_failed` and the times go to Tune (progress, status, benchmarks), not to the MLflow record.
    return {
        **metrics, "reused": 0.0, "compile_failed": float(status == tracking.COMPILE_FAILED), **phases.report(),
    }  # fmt: skip


def _params(trial: Trial) -> dict[str, Any]:
    return {
        "model": trial.model,
        "task": trial.task,
        "optimizer": trial.optimizer,
        "demos": trial.demos,
        "n_labeled": trial.n_labeled,
        "teacher": trial.teacher or trial.model,
        "seed": trial.seed,
        "n_eval": trial.n_eval,
        "n_val": trial.n_val,
        "data": trial.data,
        "structured": trial.structured,
        "task_version": trial.task_version,
        "optimizer_params": trial.optimizer_params,
        "stopping": trial.stopping,
        **(
            {
                "n_min": trial.n_min,
                "equivalence_pp": trial.equivalence_pp,
                "check_every": trial.check_every,
                "futility": trial.futility,
            }
            if trial.stopping == "sequential"
            else {}
        ),
    }


@dataclass(frozen=True)
class Pace:
    """How a trial runs, not what it computes: requests it may have in flight, where its time goes, and the
    writes to MLflow that run in the background while the trial goes on (joined before the result is committed)."""

    concurrency: int
    """Requests in flight the trial was started with (its share of its node's slots)."""
    phases: Phases
    allowance: Callable[[], int] | None = None
    """The live share (slots lent by the driver while nothing else can use them: `trainables.slots`), if any."""
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="arb-publish")
    )
    pending: list[Future[dict[str, str] | None]] = field(default_factory=list)

    def later(self, write: Callable[[], dict[str, str] | None]) -> None:
        """Run `write` (an MLflow write with an explicit run id; it may return tags for the run) in the background."""
        self.pending.append(self.pool.submit(write))

    def settle(self) -> dict[str, str]:
        """Wait for every background write; the tags they returned. The first failure is raised."""
        try:
            tags: dict[str, str] = {}
            for future in self.pending:
                tags.update(future.result() or {})
            return tags
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the background writes without looking at their outcome (the trial failed anyway)."""
        self.pool.shutdown(wait=True)

    @property
    def limit(self) -> int | Callable[[], int]:
        return self.allowance or self.concurrency

    def now(self) -> int:
        return max(1, self.allowance()) if self.allowance is not None else self.concurrency


def _work(
    trial: Trial, runtime: Runtime, registry: ModelRegistry, evals: tracing.EvaluationRuns, pace: Pace
) -> tuple[str, dict[str, float], dict[str, str], dict[str, str]]:
    """The named steps of a trial; returns (status, metrics, artifacts, extra tags)."""
    run_id = evals.parent
    task = get_task(trial.task)
    student_entry = registry.get(trial.model)
    teacher_name = trial.teacher or trial.model
    teacher_entry = registry.get(teacher_name)

    with pace.phases.phase("load"):
        splits = task.load(trial.data, trial.seed, trial.n_labeled, trial.n_val, trial.n_eval)
    sandbox.set_mode(trial.sandbox)
    meter = new_meter(run_id)
    try:
        with dspy.context(adapter=adapters.adapter(trial.structured)):
            return _steps(trial, runtime, task, splits, student_entry, (teacher_name, teacher_entry), meter,
                          (evals, pace))  # fmt: skip
    finally:
        drop_meter(run_id)


def _steps(
    trial: Trial, runtime: Runtime, task: Task, splits: Splits, student_entry: ModelEntry,
    teacher: tuple[str, ModelEntry], meter: Meter, where: tuple[tracing.EvaluationRuns, Pace],
) -> tuple[str, dict[str, float], dict[str, str], dict[str, str]]:  # fmt: skip
    """Baseline, compile, evaluate (or the demo ablation), with the trial's LMs and adapter in place; `where`: the
    trial's evaluation runs (one per condition) and its pace."""
    run_id = meter.name
    evals, pace = where
    teacher_name, teacher_entry = teacher
    with pace.phases.phase("gate"):
        slots.wait_turn(pace.allowance)  # placed ahead of its node's model switch: no request before it
    with pace.phases.phase("load"):
        lm_cache.install(tracking.default_home() / "cache" / "lm" if trial.lm_cache else None)
        student_at = endpoint_for(runtime, trial.model, student_entry)
        teacher_at = endpoint_for(runtime, teacher_name, teacher_entry)
        student = build_lm(student_entry, meter=run_id, role="student", **student_at)
        teacher = build_lm(teacher_entry, meter=run_id, role="teacher", **teacher_at)
        program = task.program(splits)

    meter.stage = "baseline"

    def evaluate_baseline() -> EvalResult:
        return evaluate(program, splits.test, task, lm=student, condition="baseline", traced=evals.traced("baseline"),
                        concurrency=pace.limit)  # fmt: skip

    shared_from = None
    sequential = trial.stopping == "sequential"
    if not sequential:  # a sequential trial scores its baseline beside the optimized program, after the compile
        with pace.phases.phase("eval"):
            if trial.share_baseline:
                client = MlflowClient(runtime.tracking_uri)
                baseline, shared_from = baselines.shared(client, runtime.experiment_id, trial, evaluate_baseline)
            else:
                baseline = evaluate_baseline()

    if trial.optimizer == "demo_ablation":
        client = MlflowClient(runtime.tracking_uri)
        return _ablate(trial, task, splits, student, meter, (baseline, shared_from), client,
                       (student_entry, teacher_entry), where)  # fmt: skip

    meter.stage = "optimize"
    status, compiled, compile_error = tracking.FINISHED, program, ""
    if trial.optimizer != "none":
        try:
            with dspy.context(lm=student), pace.phases.phase("optimize"):
                compiled = COMPILERS[trial.optimizer](
                    CompileRequest(
                        program=program,
                        trainset=splits.train,
                        valset=splits.val,
                        metric=task.metric,
                        demos=trial.demos,
                        seed=trial.seed,
                        student=student,
                        teacher=teacher,
                        params=trial.optimizer_params,
                        threads=pace.now(),
                        feedback=task.feedback,
                        state_dir=tracking.default_home() / "cache" / "optimizer-state" / trial.key,
                    )
                )
        except Exception as exc:
            # Small models break optimizers in many ways (no successful bootstrap, unparseable proposals):
            # the trial keeps its baseline and says so, rather than crashing the sweep.
            status, compiled = tracking.COMPILE_FAILED, program
            compile_error = f"{type(exc).__name__}: {tracking.redact(str(exc))}"[:2000]
            log.warning("compile failed for %s: %s", trial.run_name, compile_error)
    optimize_seconds = pace.phases.seconds.get("optimize", 0.0)
    candidates = publish.take_candidates(compiled, trial.optimizer)
    if candidates:
        pace.later(lambda: publish.log_candidates(run_id, candidates))

    decision = None
    if sequential:
        baseline, optimized, decision = _evaluate_sequentially(trial, task, splits, (program, compiled), student,
                                                               meter, where)  # fmt: skip
    else:
        meter.stage = "optimized"
        if compiled is program:
            optimized = baseline.relabel("optimized")
        else:
            with pace.phases.phase("eval"):
                optimized = evaluate(compiled, splits.test, task, lm=student, condition="optimized",
                                     traced=evals.traced("optimized"), concurrency=pace.limit)  # fmt: skip
    eval_seconds = pace.phases.seconds.get("eval", 0.0)

    metrics = _metrics(baseline, optimized, meter, student_entry, teacher_entry, compiled)
    metrics.update(optimize_seconds=optimize_seconds, eval_seconds=eval_seconds,
                   eval_in_flight=(baseline.mean_in_flight + optimized.mean_in_flight) / 2)  # fmt: skip
    delta = _delta(baseline, optimized, decision)
    tags: dict[str, str] = {}
    if decision is not None:
        metrics.update(_stop_metrics(decision, metrics, len(splits.test)))
        tags["arb.stop_reason"] = decision.reason
        pace.later(lambda: _log_sequence(runtime.tracking_uri, run_id, decision))
    if candidates:
        metrics["candidates"] = float(len(candidates))
    metrics["baseline_shared"] = float(shared_from is not None)
    if trial.optimizer == "gepa":
        metrics["proposals_cut"] = float(getattr(teacher, "cut_refused", 0))  # reflections refused as truncated
    artifacts = {
        "program.json": _program_state(compiled),
        "instruction.txt": _instructions(compiled),
        "examples.csv": pd.DataFrame(baseline.rows() + optimized.rows()).to_csv(index=False),
    }
    if compile_error:
        tags["arb.compile_error"] = compile_error
    if shared_from is not None:
        tags["arb.baseline_run"] = shared_from
    tags["arb.outcome"] = outcome_label(status, metrics["delta_pp"], int(metrics["n_evaluated"]))
    tags.update(context_tags(metrics))
    if trial.task == "code":
        tags["arb.sandbox"] = trial.sandbox
    rows = baseline.rows() + optimized.rows()
    evals.done([_outcome(baseline, shared_from is not None), _outcome(optimized, compiled is program)])
    with pace.phases.phase("publish"):
        tags.update(_publish(trial, evals, status, splits, compiled, student, metrics,
                             (compile_error, delta, decision), rows, pace))  # fmt: skip
    return status, metrics, artifacts, tags


def _evaluate_sequentially(
    trial: Trial, task: Task, splits: Splits, programs: tuple[dspy.Module, dspy.Module], student: dspy.LM,
    meter: Meter, where: tuple[tracing.EvaluationRuns, Pace],
) -> tuple[EvalResult, EvalResult, Decision]:  # fmt: skip
    """Baseline and optimized on the same test examples, a batch at a time in the seeded test order, until the
    stopping rule decides (`trainables.sequential`); the unevaluated examples cost nothing."""
    baseline_program, compiled = programs
    evals, pace = where
    n_max = len(splits.test)
    rule = StopRule(n_max=n_max, n_min=min(trial.n_min, n_max), equivalence_pp=trial.equivalence_pp,
                    check_every=trial.check_every, futility=trial.futility, seed=trial.seed)  # fmt: skip
    parts: tuple[list[EvalResult], list[EvalResult]] = ([], [])
    done = 0
    for look in rule.looks():
        batch = splits.test[done:look]
        with pace.phases.phase("eval"):
            meter.stage = "baseline"
            base = evaluate(baseline_program, batch, task, lm=student, condition="baseline",
                            traced=evals.traced("baseline"), concurrency=pace.limit)  # fmt: skip
            meter.stage = "optimized"
            if compiled is baseline_program:  # nothing changed: the same answers, no calls
                opt = base.relabel("optimized")
            else:
                opt = evaluate(compiled, batch, task, lm=student, condition="optimized",
                               traced=evals.traced("optimized"), concurrency=pace.limit)  # fmt: skip
        parts[0].append(base)
        parts[1].append(opt)
        done = look
        baseline, optimized = joined(parts[0], task), joined(parts[1], task)
        a, b = _aligned(baseline, optimized)
        decision = check(rule, b - a)
        if decision is not None:
            log.info("%s: stopped after %d of %d examples: %s", trial.run_name, decision.n, n_max, decision.reason)
            return baseline, optimized, decision
    raise AssertionError("a stopping rule always decides at its last look")


def _delta(baseline: EvalResult, optimized: EvalResult, decision: Decision | None) -> PairedDelta:
    """The trial's own comparison: the sequence's interval if it stopped sequentially, else the paired test."""
    a, b = _aligned(baseline, optimized)
    return decision.paired(b - a) if decision is not None else paired_delta(a, b)


def _stop_metrics(decision: Decision, metrics: dict[str, float], n_max: int) -> dict[str, float]:
    """How a sequential trial stopped; the calls saved are its evaluation calls per example times the examples it
    did not need."""
    per_example = metrics["eval_lm_calls"] / max(decision.n, 1)
    return {
        "seq_ci_low": decision.look.ci_low,
        "seq_ci_high": decision.look.ci_high,
        "seq_p_value": decision.look.p_value,
        "eval_calls_saved": per_example * (n_max - decision.n),
    }


def _log_sequence(tracking_uri: str, run_id: str, decision: Decision) -> None:
    """The sequence at every look, as metric history (step = examples per condition: the UI charts it narrowing)
    and as `sequence.csv`."""
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    history = [Metric(name, value, now, look.n) for look in decision.path
               for name, value in (("seq_ci_low", look.ci_low), ("seq_ci_high", look.ci_high),
                                   ("seq_p_value", look.p_value))]  # fmt: skip
    client.log_batch(run_id, metrics=history)
    table = pd.DataFrame([vars(look) for look in decision.path]).to_csv(index=False)
    client.log_text(run_id, table, "sequence.csv")


def _outcome(result: EvalResult, borrowed: bool = False) -> tracing.Outcome:
    """A condition's result for its evaluation run; `borrowed`: its traces are another condition's or trial's (an
    unchanged program relabelled, a shared baseline)."""
    traces = [r.trace_id for r in result.records if r.trace_id]
    return tracing.Outcome(result.condition, result.score, len(result.records), traces, borrowed)


def _publish(
    trial: Trial, evals: tracing.EvaluationRuns, status: str, splits: Splits, program: dspy.Module,
    student: dspy.LM, metrics: dict[str, float], outcome: tuple[str, PairedDelta, Decision | None],
    rows: list[dict[str, Any]], pace: Pace,
) -> dict[str, str]:  # fmt: skip
    """Datasets, the per-example table, the program as a model and its instruction as a prompt version, and the
    run's description; returns the tags that point to them (the table and the prompt are written in the background:
    the prompt's tag comes with `pace.settle()`). `outcome`: the compile error, the comparison, how it stopped."""
    compile_error, delta, decision = outcome
    run_id = evals.parent
    expected = get_task(trial.task).expected
    pace.later(lambda: publish.log_examples_table(run_id, rows, splits.test, expected))
    instruction = _instructions(program)
    if status == tracking.FINISHED and trial.optimizer not in ("none", "demo_ablation"):
        message = f"{trial.grid}: {trial.run_name}: {metrics['baseline_score']:.1f} → {metrics['optimized_score']:.1f}"
        prompt_tags = {"arb.run_id": run_id, "arb.trial_key": trial.key, "arb.grid": trial.grid}
        pace.later(lambda: {"arb.prompt_uri": publish.register_instruction(
            trial.task, trial.model, instruction, run_id=run_id, message=message, tags=prompt_tags)})  # fmt: skip
    # these two use MLflow's active run, which is this thread's
    publish.log_datasets(splits, trial.task, trial.data)
    tags = {"arb.model_uri": publish.log_program(program, student)}
    runs = evals.links()
    tags["mlflow.note.content"] = publish.description(trial, status, metrics, delta, compile_error, decision,
                                                      (evals.experiment_id, runs) if runs else None)  # fmt: skip
    return tags


def _aligned(a: EvalResult, b: EvalResult) -> tuple[np.ndarray, np.ndarray]:
    """Per-example scores of two conditions on the examples both have, in the same order."""
    scores_b = {r.example_id: r.score for r in b.records}
    both = [r for r in a.records if r.example_id in scores_b]
    return np.array([r.score for r in both]), np.array([scores_b[r.example_id] for r in both])


def endpoint_for(runtime: Runtime, name: str, entry: ModelEntry) -> dict[str, Any]:
    """Where to reach a model (and which version answers there): the driver's override (embedded servers), else
    for Ollama this node's server, checked to answer and hold the model before any work is done."""
    if name in runtime.endpoints:
        return {"endpoint": runtime.endpoints[name], "timeout_s": runtime.timeouts.get(name),
                "version": runtime.versions.get(name)}  # fmt: skip
    if entry.provider != "ollama":
        return {"endpoint": None}
    host = ollama_node.node_endpoint(entry)
    digest = ollama_node.ensure_model(host, entry.id) if host is not None else None
    return {"endpoint": host, "version": digest}


def _ablate(
    trial: Trial, task: Task, splits: Splits, student: dspy.LM, meter: Meter, base: tuple[EvalResult, str | None],
    client: MlflowClient, entries: tuple[Any, Any], where: tuple[tracing.EvaluationRuns, Pace],
) -> tuple[str, dict[str, float], dict[str, str], dict[str, str]]:  # fmt: skip
    """Phase 3: the source program with its instruction and its first k demos, k = 0..demos (see ablation.py).
    `base`: the baseline and the run it was shared from, if any."""
    baseline, shared_from = base
    evals, pace = where
    source = ablation.find_source(client, trial)
    program = ablation.load_program(client, source, task.program(splits))
    have = max(ablation.demo_counts(program), default=0)
    if trial.demos > have:
        raise ArbError(
            f"the source program has {have} demos, fewer than demos={trial.demos}", "lower `demos` in the grid file"
        )
    meter.stage = "optimized"
    results: list[EvalResult] = []
    for k in range(trial.demos + 1):
        variant = ablation.with_first_demos(program, k)
        with pace.phases.phase("eval"):
            results.append(
                evaluate(variant, splits.test, task, lm=student, condition=f"k{k}",
                         traced=evals.traced(f"k{k}"), concurrency=pace.limit)
            )  # fmt: skip
    full = ablation.with_first_demos(program, trial.demos)
    metrics = _metrics(baseline, results[-1], meter, *entries, full)
    metrics.update({f"score_k{k}": r.score for k, r in enumerate(results)})
    metrics.update(
        instruction_effect_pp=results[0].score - baseline.score,
        demo_effect_pp=results[-1].score - results[0].score,
        optimize_seconds=0.0,
        eval_seconds=pace.phases.seconds["eval"],
        eval_in_flight=sum(r.mean_in_flight for r in [baseline, *results]) / (len(results) + 1),
    )
    rows = baseline.rows() + [row for r in results for row in r.rows()]
    evals.done([_outcome(baseline, borrowed=shared_from is not None), *map(_outcome, results)])
    artifacts = {
        "program.json": _program_state(full),
        "instruction.txt": _instructions(full),
        "examples.csv": pd.DataFrame(rows).to_csv(index=False),
    }
    tags = {"arb.source_run": source.info.run_id, **context_tags(metrics)}
    with pace.phases.phase("publish"):
        delta = _delta(baseline, results[-1], None)
        tags.update(_publish(trial, evals, tracking.FINISHED, splits, full, student, metrics, ("", delta, None),
                             rows, pace))  # fmt: skip
    return tracking.FINISHED, metrics, artifacts, tags


def _metrics(
    baseline: EvalResult,
    optimized: EvalResult,
    meter: Any,
    student_entry: Any,
    teacher_entry: Any,
    compiled: Any,
) -> dict[str, float]:
    student = meter.total(role="student")
    teacher = meter.total(role="teacher")
    evaluation = meter.total(stage="baseline")
    evaluation.add(meter.total(stage="optimized"))
    optimization = meter.total(stage="optimize")
    total = meter.total()
    cost = student_entry.cost_usd(student.prompt_tokens, student.completion_tokens) + teacher_entry.cost_usd(
        teacher.prompt_tokens, teacher.completion_tokens
    )
    return {
        "baseline_score": baseline.score,
        "optimized_score": optimized.score,
        "delta_pp": optimized.score - baseline.score,
        "n_evaluated": float(len(optimized.records)),
        "n_demos_chosen": float(sum(len(p.demos) for p in compiled.predictors())),
        "latency_ms_p50": optimized.latency_ms(50),
        "latency_ms_p95": optimized.latency_ms(95),
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "cost_usd": cost,
        "lm_calls": total.calls,
        "thinking_tokens": total.thinking_tokens,
        "cache_hits": total.cache_hits,
        "eval_lm_calls": evaluation.calls,
        "optimize_lm_calls": optimization.calls,
        "optimize_prompt_tokens": optimization.prompt_tokens,
        "optimize_completion_tokens": optimization.completion_tokens,
        "teacher_lm_calls": teacher.calls,
        "parse_failures_baseline": baseline.parse_failures,
        "parse_failures_optimized": optimized.parse_failures,
        "lm_errors": baseline.lm_errors + optimized.lm_errors,
        "truncated_calls": total.truncated_calls,
        "truncated_calls_baseline": meter.total(stage="baseline").truncated_calls,
        "truncated_calls_optimize": optimization.truncated_calls,
        "truncated_calls_optimized": meter.total(stage="optimized").truncated_calls,
        "context_errors": baseline.context_errors + optimized.context_errors,
    }


def context_tags(metrics: dict[str, float]) -> dict[str, str]:
    """`arb.truncated`: whether any call of the trial may have been cut by its context window (or refused for
    it): a score of such a trial may measure a prompt the model never saw whole, so the report sets it apart."""
    hit = metrics.get("truncated_calls", 0) + metrics.get("context_errors", 0)
    return {"arb.truncated": "true" if hit else "false"}


def _program_state(program: dspy.Module) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.json"
        program.save(str(path))
        return path.read_text()


def _instructions(program: dspy.Module) -> str:
    parts = [f"# {name}\n{predictor.signature.instructions}\n" for name, predictor in program.named_predictors()]
    return "\n".join(parts)
