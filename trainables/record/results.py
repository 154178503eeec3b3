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
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from trainables.lm.client import Meter
from trainables.record import publish, tracing, tracking
from trainables.record.schema import Tag
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
        "baseline_score": baseline.score,
        "optimized_score": optimized.score,
        "delta_pp": optimized.score - baseline.score,
        "baseline_strict": baseline.strict,
        "optimized_strict": optimized.strict,
        "n_evaluated": float(len(optimized.records)),
        "n_demos_chosen": float(sum(len(p.demos) for p in program.predictors())),
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
    per_example = metrics["eval_lm_calls"] / max(decision.n, 1)
    return {
        "seq_ci_low": decision.look.ci_low,
        "seq_ci_high": decision.look.ci_high,
        "seq_p_value": decision.look.p_value,
        "eval_calls_saved": per_example * (n_max - decision.n),
    }


def log_sequence(tracking_uri: str, run_id: str, decision: Decision) -> None:
    """The sequence at every look, as metric history (step = examples per condition: the UI charts it narrowing)
    and as `sequence.csv`."""
    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    history = [Metric(name, value, now, look.n) for look in decision.path
               for name, value in (("seq_ci_low", look.ci_low), ("seq_ci_high", look.ci_high),
                                   ("seq_p_value", look.p_value))]  # fmt: skip
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
        message = f"{trial.grid}: {trial.run_name}: {metrics['baseline_score']:.1f} → {metrics['optimized_score']:.1f}"
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
