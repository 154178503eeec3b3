"""A trial's result as the MLflow record holds it: its params, metrics and tags, its program as artifacts, and
what `publish` writes beside them (datasets, the per-example table, the logged program, the prompt version, the
run's description)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
import pandas as pd
from mlflow.entities import Metric as MetricPoint
from mlflow.tracking import MlflowClient

from trainables.lm.client import Meter
from trainables.record import publish, tracing, tracking
from trainables.record.schema import Metric, Tag
from trainables.record.scores import EvalResult
from trainables.registry import ModelEntry
from trainables.stats.paired import PairedDelta
from trainables.stats.sequential import Decision
from trainables.tasks import get_task
from trainables.tasks.base import Splits
from trainables.timing import Pace
from trainables.vocabulary import Trial


def params(trial: Trial) -> dict[str, Any]:
    """The run's params: the trial's settings (the stopping rule's only when it stops sequentially)."""
    fields = ("model", "task", "optimizer", "demos", "n_labeled", "seed", "n_eval", "n_val", "data", "structured",
              "task_version", "optimizer_params", "stopping", "scoring")  # fmt: skip
    out: dict[str, Any] = {name: getattr(trial, name) for name in fields}
    out["teacher"] = trial.teacher or trial.model
    if trial.stopping == "sequential":
        out.update(n_min=trial.n_min, equivalence_pp=trial.equivalence_pp, check_every=trial.check_every,
                   futility=trial.futility)  # fmt: skip
    return out


def metrics(
    baseline: EvalResult, optimized: EvalResult, meter: Meter, entries: tuple[ModelEntry, ModelEntry],
    program: dspy.Module,
) -> dict[str, float]:  # fmt: skip
    """Scores, calls, tokens and cost of a trial whose conditions are `baseline` and `optimized`; `entries`: the
    student's and the teacher's registry entries (their prices)."""
    student_entry, teacher_entry = entries
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
        Metric.BASELINE_SCORE: baseline.score,
        Metric.OPTIMIZED_SCORE: optimized.score,
        Metric.DELTA_PP: optimized.score - baseline.score,
        Metric.BASELINE_STRICT: baseline.strict,
        Metric.OPTIMIZED_STRICT: optimized.strict,
        Metric.N_EVALUATED: float(len(optimized.records)),
        Metric.N_DEMOS_CHOSEN: float(sum(len(p.demos) for p in program.predictors())),
        Metric.LATENCY_MS_P50: optimized.latency_ms(50),
        Metric.LATENCY_MS_P95: optimized.latency_ms(95),
        Metric.PROMPT_TOKENS: total.prompt_tokens,
        Metric.COMPLETION_TOKENS: total.completion_tokens,
        Metric.COST_USD: cost,
        Metric.LM_CALLS: total.calls,
        Metric.THINKING_TOKENS: total.thinking_tokens,
        Metric.CACHE_HITS: total.cache_hits,
        Metric.EVAL_LM_CALLS: evaluation.calls,
        Metric.OPTIMIZE_LM_CALLS: optimization.calls,
        Metric.OPTIMIZE_PROMPT_TOKENS: optimization.prompt_tokens,
        Metric.OPTIMIZE_COMPLETION_TOKENS: optimization.completion_tokens,
        Metric.TEACHER_LM_CALLS: teacher.calls,
        Metric.PARSE_FAILURES_BASELINE: baseline.parse_failures,
        Metric.PARSE_FAILURES_OPTIMIZED: optimized.parse_failures,
        Metric.LM_ERRORS: baseline.lm_errors + optimized.lm_errors,
        Metric.TRUNCATED_CALLS: total.truncated_calls,
        Metric.TRUNCATED_CALLS_BASELINE: meter.total(stage="baseline").truncated_calls,
        Metric.TRUNCATED_CALLS_OPTIMIZE: optimization.truncated_calls,
        Metric.TRUNCATED_CALLS_OPTIMIZED: meter.total(stage="optimized").truncated_calls,
        Metric.CONTEXT_ERRORS: baseline.context_errors + optimized.context_errors,
    }


def context_tags(metrics: dict[str, float]) -> dict[str, str]:
    """`arb.truncated`: whether any call of the trial may have been cut by its context window (or refused for
    it): a score of such a trial may measure a prompt the model never saw whole, so the report sets it apart."""
    hit = metrics.get(Metric.TRUNCATED_CALLS, 0) + metrics.get(Metric.CONTEXT_ERRORS, 0)
    return {Tag.TRUNCATED: "true" if hit else "false"}


def artifacts(program: dspy.Module, rows: list[dict[str, Any]]) -> dict[str, str]:
    """The files a finished trial leaves in its run: its program's state, its instructions, its per-example rows."""
    return {
        "program.json": program_state(program),
        "instruction.txt": instructions(program),
        "examples.csv": pd.DataFrame(rows).to_csv(index=False),
    }


def program_state(program: dspy.Module) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.json"
        program.save(str(path))
        return path.read_text()


def instructions(program: dspy.Module) -> str:
    parts = [f"# {name}\n{predictor.signature.instructions}\n" for name, predictor in program.named_predictors()]
    return "\n".join(parts)


def outcome(result: EvalResult, borrowed: bool = False) -> tracing.Outcome:
    """A condition's result for its evaluation run; `borrowed`: its traces are another condition's or trial's (an
    unchanged program relabelled, a shared baseline)."""
    traces = [r.trace_id for r in result.records if r.trace_id]
    return tracing.Outcome(result.condition, result.score, len(result.records), traces, borrowed)


def stop_metrics(decision: Decision, metrics: dict[str, float], n_max: int) -> dict[str, float]:
    """How a sequential trial stopped; the calls saved are its evaluation calls per example times the examples it
    did not need."""
    per_example = metrics[Metric.EVAL_LM_CALLS] / max(decision.n, 1)
    return {
        Metric.SEQ_CI_LOW: decision.look.ci_low,
        Metric.SEQ_CI_HIGH: decision.look.ci_high,
        Metric.SEQ_P_VALUE: decision.look.p_value,
        Metric.EVAL_CALLS_SAVED: per_example * (n_max - decision.n),
    }


def log_sequence(tracking_uri: str, run_id: str, decision: Decision) -> None:
    """The sequence at every look, as metric history (step = examples per condition: the UI charts it narrowing)
    and as `sequence.csv`."""
    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    history = [MetricPoint(name, value, now, look.n) for look in decision.path
               for name, value in ((Metric.SEQ_CI_LOW, look.ci_low), (Metric.SEQ_CI_HIGH, look.ci_high),
                                   (Metric.SEQ_P_VALUE, look.p_value))]  # fmt: skip
    client.log_batch(run_id, metrics=history)
    table = pd.DataFrame([vars(look) for look in decision.path]).to_csv(index=False)
    client.log_text(run_id, table, "sequence.csv")


@dataclass(frozen=True)
class Comparison:
    """How a trial's two conditions compare: the paired delta, how a sequential trial stopped (None: it scored
    every example), and the compile error if the optimizer failed (the trial then kept its baseline)."""

    delta: PairedDelta
    decision: Decision | None = None
    compile_error: str = ""


def publish_trial(
    trial: Trial, evals: tracing.EvaluationRuns, status: str, splits: Splits, program: dspy.Module,
    student: dspy.LM, metrics: dict[str, float], comparison: Comparison,
    rows: list[dict[str, Any]], pace: Pace, *, compiled: bool,
) -> dict[str, str]:  # fmt: skip
    """Datasets, the per-example table, the program as a model and its instruction as a prompt version, and the
    run's description; returns the tags that point to them (the table and the prompt are written in the background:
    the prompt's tag comes with `pace.settle()`). `compiled`: the program is an optimizer's, so its instruction
    becomes a prompt version."""
    compile_error, delta, decision = comparison.compile_error, comparison.delta, comparison.decision
    run_id = evals.parent
    expected = get_task(trial.task).expected
    pace.later(lambda: publish.log_examples_table(run_id, rows, splits.test, expected))
    instruction = instructions(program)
    if status == tracking.FINISHED and compiled:
        before, after = metrics[Metric.BASELINE_SCORE], metrics[Metric.OPTIMIZED_SCORE]
        message = f"{trial.grid}: {trial.run_name}: {before:.1f} → {after:.1f}"
        prompt_tags = {Tag.RUN_ID: run_id, Tag.KEY: trial.key, Tag.GRID: trial.grid}
        pace.later(lambda: {Tag.PROMPT_URI: publish.register_instruction(
            trial.task, trial.model, instruction, run_id=run_id, message=message, tags=prompt_tags)})  # fmt: skip
    # these two use MLflow's active run, which is this thread's
    publish.log_datasets(splits, trial.task, trial.data)
    tags = {Tag.MODEL_URI: publish.log_program(program, student)}
    runs = evals.links()
    tags["mlflow.note.content"] = publish.description(trial, status, metrics, delta, compile_error, decision,
                                                      (evals.experiment_id, runs) if runs else None)  # fmt: skip
    return tags
