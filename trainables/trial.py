"""One Ray Tune trial: load the task, build the LMs, evaluate the baseline, compile, evaluate, log, report.

`run_trial(config)` is the Tune trainable. `execute_trial(config)` is the same work without Tune, for tests
and scripts. A trial whose key already has a finished MLflow run returns that run's metrics and makes no LM call.
The steps are told here; what they write to MLflow is in `trainables.record.results`, the sequential comparison in
`trainables.stopping`, the demo ablation in `trainables.ablation`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import dspy
from mlflow.tracking import MlflowClient

from trainables import ablation, baselines
from trainables.context import Runtime, TrialContext, TrialOutcome, endpoint_for
from trainables.lm import adapters, slots
from trainables.lm import cache as lm_cache
from trainables.lm.client import build_lm, drop_meter, new_meter
from trainables.optimizers import CompileRequest, get_optimizer
from trainables.record import publish, results, tracing, tracking
from trainables.record.schema import Metric, Tag
from trainables.record.scores import EvalResult
from trainables.registry import ModelRegistry
from trainables.stats.paired import outcome_label
from trainables.stopping import comparison, evaluate_sequentially
from trainables.tasks import get_task, sandbox
from trainables.timing import Pace, Phases
from trainables.vocabulary import Trial

__all__ = ["Runtime", "TrialFailed", "endpoint_for", "execute_trial", "run_trial"]

log = logging.getLogger(__name__)


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
    flight at once; default: the student's `ModelEntry.in_flight`), `slot_id` (where the share of its node's slots
    it holds right now is posted: `trainables.lm.slots`) and `suggested_at` (when it was handed out)."""
    phases = Phases(config.get("suggested_at"))
    trial = Trial.model_validate(config["trial"])
    runtime = Runtime.model_validate(config["runtime"])
    client = MlflowClient(runtime.tracking_uri)
    registry = runtime.model_registry()
    # what the student's server takes from one trial, unless the searcher gave the trial a share of a node's slots
    concurrency = max(1, int(config.get("concurrency") or registry.get(trial.model).in_flight))

    with phases.phase("setup"):
        run_id, done = tracking.open_run(
            client,
            runtime.experiment_id,
            trial.key,
            trial.run_name,
            {
                Tag.PHASE: trial.phase,
                Tag.GRID: trial.grid,
                Tag.TASK_VERSION: trial.task_version,
                Tag.POINT: trial.point_key,
            },
            {**results.params(trial), "provider": registry.get(trial.model).provider},
        )
        if done is not None:
            log.info("trial %s already finished in run %s; nothing to do", trial.key, run_id)
            if done.info.status != "FINISHED":  # a run finished by a process killed before it closed the run
                client.set_terminated(run_id, status="FINISHED")
    if done is not None:
        failed = done.data.tags.get(Tag.STATUS) == tracking.COMPILE_FAILED
        return {**done.data.metrics, "reused": 1.0, "compile_failed": float(failed), **phases.report()}
    pace = Pace(concurrency, phases, slots.allowance(config.get("slot_id"), concurrency))
    try:
        # the trace export is awaited with the other background writes, not before them
        with tracing.recording(runtime.tracking_uri, runtime.experiment_id, (run_id, trial.run_name), trial.traces,
                               trial.trace_sample, pace.later) as evals:  # fmt: skip
            out = _work(trial, runtime, registry, evals, pace)
    except BaseException as exc:
        pace.close()
        tracking.mark_errored(client, run_id, exc)
        exc.add_note(f"MLflow run {run_id}")
        raise
    try:
        with phases.phase("finish"):
            pace.later(lambda: tracking.upload_artifacts(client, run_id, out.artifacts))
            out.tags.update(pace.settle())
            tracking.commit(client, run_id, status=out.status, metrics=out.metrics, tags=out.tags)
    except BaseException as exc:
        # A full disk or a lost store mid-write: the status tag was not written, so the run is not taken for
        # finished; say why if the store still takes a write, and let the retry or resume redo the trial.
        with contextlib.suppress(Exception):
            tracking.mark_errored(client, run_id, exc)
        raise
    # `reused`, `compile_failed` and the times go to Tune (progress, status, benchmarks), not to the MLflow record.
    return {**out.metrics, "reused": 0.0, "compile_failed": float(out.status == tracking.COMPILE_FAILED),
            **phases.report()}  # fmt: skip


def _work(
    trial: Trial, runtime: Runtime, registry: ModelRegistry, evals: tracing.EvaluationRuns, pace: Pace
) -> TrialOutcome:
    """Load the data, take the trial's turn on its node, build the LMs, then the steps with its adapter in place."""
    task = get_task(trial.task).with_scoring(trial.scoring)
    teacher_name = trial.teacher or trial.model
    student_entry, teacher_entry = registry.get(trial.model), registry.get(teacher_name)
    with pace.phases.phase("load"):
        splits = task.load(trial.data, trial.seed, trial.n_labeled, trial.n_val, trial.n_eval)
    sandbox.set_mode(trial.sandbox)
    meter = new_meter(evals.parent)
    try:
        with pace.phases.phase("gate"):
            slots.wait_turn(pace.allowance)  # placed ahead of its node's model switch: no request before it
        with pace.phases.phase("load"):
            lm_cache.install(tracking.default_home() / "cache" / "lm" if trial.lm_cache else None)
            student_at = endpoint_for(runtime, trial.model, student_entry)
            teacher_at = endpoint_for(runtime, teacher_name, teacher_entry)
            student = build_lm(student_entry, meter=evals.parent, role="student", at=student_at)
            teacher = build_lm(teacher_entry, meter=evals.parent, role="teacher", at=teacher_at)
        ctx = TrialContext(trial, runtime, task, splits, get_optimizer(trial.optimizer), student, teacher,
                           student_entry, teacher_entry, meter, evals, pace)  # fmt: skip
        with dspy.context(adapter=adapters.adapter(trial.structured)):
            return _steps(ctx)
    finally:
        drop_meter(evals.parent)


def _steps(ctx: TrialContext) -> TrialOutcome:
    """Baseline, compile, evaluate (or the demo ablation)."""
    trial, pace, optimizer = ctx.trial, ctx.pace, ctx.optimizer
    with pace.phases.phase("load"):
        program = ctx.task.program(ctx.splits)
    sequential = trial.stopping == "sequential"
    baseline, shared_from = None, None
    if not sequential:  # a sequential trial scores its baseline beside the optimized program, after the compile
        baseline, shared_from = _baseline(ctx, program)
    if optimizer.stored_program:
        assert baseline is not None  # a stored program's ablation is never sequential (`GridSpec`)
        return ablation.run(ctx, baseline, shared_from)

    ctx.meter.stage = "optimize"
    status, compiled, compile_error = tracking.FINISHED, program, ""
    if optimizer.compiles:
        try:
            compiled = _compile(ctx, program)
        except Exception as exc:
            # Small models break optimizers in many ways (no successful bootstrap, unparseable proposals):
            # the trial keeps its baseline and says so, rather than crashing the sweep.
            status, compiled = tracking.COMPILE_FAILED, program
            compile_error = f"{type(exc).__name__}: {tracking.redact(str(exc))}"[:2000]
            log.warning("compile failed for %s: %s", trial.run_name, compile_error)
    optimize_seconds = pace.phases.seconds.get("optimize", 0.0)
    candidates = optimizer.candidates(compiled)
    if candidates:
        pace.later(lambda: publish.log_candidates(ctx.run_id, candidates))

    decision = None
    if sequential:
        baseline, optimized, decision = evaluate_sequentially(ctx, program, compiled)
    elif compiled is program:
        assert baseline is not None
        optimized = baseline.relabel("optimized")
    else:
        optimized = ctx.evaluate(compiled, "optimized")
    assert baseline is not None

    metrics = results.metrics(baseline, optimized, ctx.meter, (ctx.student_entry, ctx.teacher_entry), compiled)
    metrics.update({Metric.OPTIMIZE_SECONDS: optimize_seconds,
                    Metric.EVAL_SECONDS: pace.phases.seconds.get("eval", 0.0),
                    Metric.EVAL_IN_FLIGHT: (baseline.mean_in_flight + optimized.mean_in_flight) / 2})  # fmt: skip
    delta = comparison(baseline, optimized, decision)
    tags: dict[str, str] = {}
    if decision is not None:
        metrics.update(results.stop_metrics(decision, metrics, len(ctx.splits.test)))
        tags[Tag.STOP_REASON] = decision.reason
        pace.later(lambda: results.log_sequence(ctx.runtime.tracking_uri, ctx.run_id, decision))
    if candidates:
        metrics["candidates"] = float(len(candidates))
    metrics[Metric.BASELINE_SHARED] = float(shared_from is not None)
    metrics.update(optimizer.trial_metrics(ctx.teacher))
    rows = baseline.rows() + optimized.rows()
    if compile_error:
        tags[Tag.COMPILE_ERROR] = compile_error
    if shared_from is not None:
        tags[Tag.BASELINE_RUN] = shared_from
    tags[Tag.OUTCOME] = outcome_label(status, metrics["delta_pp"], int(metrics["n_evaluated"]))
    tags.update(results.context_tags(metrics))
    if ctx.task.runs_code:
        tags[Tag.SANDBOX] = trial.sandbox
    borrowed = (shared_from is not None, compiled is program)
    ctx.evals.done([results.outcome(baseline, borrowed[0]), results.outcome(optimized, borrowed[1])])
    with pace.phases.phase("publish"):
        tags.update(results.publish_trial(trial, ctx.evals, status, ctx.splits, compiled, ctx.student, metrics,
                                          results.Comparison(delta, decision, compile_error), rows, pace,
                                          compiled=optimizer.compiles))  # fmt: skip
    return TrialOutcome(status, metrics, results.artifacts(compiled, rows), tags)


def _baseline(ctx: TrialContext, program: dspy.Module) -> tuple[EvalResult, str | None]:
    """The unoptimized program's score, and the run it was read from when an earlier trial of the same point
    kept it (`trainables.baselines`)."""
    if not ctx.trial.share_baseline:
        return ctx.evaluate(program, "baseline"), None
    client = MlflowClient(ctx.runtime.tracking_uri)
    return baselines.shared(client, ctx.runtime.experiment_id, ctx.trial, lambda: ctx.evaluate(program, "baseline"))


def _compile(ctx: TrialContext, program: dspy.Module) -> dspy.Module:
    trial = ctx.trial
    request = CompileRequest(
        program=program,
        trainset=ctx.splits.train,
        valset=ctx.splits.val,
        metric=ctx.task.metric,
        demos=trial.demos,
        seed=trial.seed,
        student=ctx.student,
        teacher=ctx.teacher,
        params=trial.optimizer_params,
        threads=ctx.pace.now(),
        feedback=ctx.task.feedback,
        state_dir=tracking.default_home() / "cache" / "optimizer-state" / trial.key,
    )
    with dspy.context(lm=ctx.student), ctx.pace.phases.phase("optimize"):
        return ctx.optimizer.compile(request)
