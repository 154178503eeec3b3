"""Evaluation of a program on examples, one example at a time, keeping a per-example record.

A model that breaks DSPy's output format scores the example as wrong (and the failure is counted); a model
server that is down fails the trial instead, because a score of 0 from a dead server would be a lie.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import dspy
import numpy as np
from dspy.utils.exceptions import AdapterParseError, ContextWindowExceededError

from trainables import lm_cache, tracing
from trainables.lm import Meter
from trainables.tasks.base import Task


@dataclass
class ExampleRecord:
    """One row of the per-example table that analysis pairs across conditions."""

    example_id: str
    condition: str
    prediction: str
    score: float
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    lm_calls: int
    error: str = ""


@dataclass
class EvalResult:
    """Scores of one condition (e.g. baseline, optimized) on the test examples."""

    condition: str
    records: list[ExampleRecord] = field(default_factory=list)
    corpus_score: float | None = None
    """The task's corpus-level score in [0, 1], for tasks whose metric is not a mean over examples."""

    @property
    def score(self) -> float:
        """The task's score in percent (0-100): its corpus metric if it has one, else the mean per-example metric."""
        if self.corpus_score is not None:
            return 100.0 * self.corpus_score
        return 100.0 * float(np.mean([r.score for r in self.records])) if self.records else 0.0

    def relabel(self, condition: str) -> EvalResult:
        """The same results under another condition name (a program the optimizer left unchanged)."""
        return replace(self, condition=condition, records=[replace(r, condition=condition) for r in self.records])

    @property
    def parse_failures(self) -> int:
        return sum(r.error == "parse" for r in self.records)

    @property
    def lm_errors(self) -> int:
        return sum(r.error not in ("", "parse") for r in self.records)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile([r.latency_ms for r in self.records], q)) if self.records else 0.0

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]


@dataclass
class Attempt:
    """One example run once: the prediction (None if it failed), its score, and what went wrong."""

    pred: Any
    score: float
    error: str
    latency_ms: float
    """The program call only, not the metric (the code task's metric runs the code)."""


def _attempt(program: dspy.Module, example: dspy.Example, task: Task, lm: dspy.LM) -> Attempt:
    start = time.perf_counter()
    pred, error = None, ""
    try:
        with lm_cache.scope() as cached, dspy.context(lm=lm):
            pred = program(**example.inputs())
    except (AdapterParseError, ValueError, RecursionError):
        # ValueError/RecursionError: DSPy's JSON fallback hands malformed output to json_repair, which gives up on
        # pathological text (e.g. thousands of nested brackets) with these instead of a parse error.
        error = "parse"
        lm_cache.forget_scope(cached)  # a retry asks the model again rather than replaying what failed
    except ContextWindowExceededError:
        error = "context_window"
    latency_ms = 1000.0 * (time.perf_counter() - start)
    score = float(task.metric(example, pred)) if pred is not None else 0.0
    return Attempt(pred, score, error, latency_ms)


def _prediction_text(pred: Any) -> str:
    if pred is None:
        return ""
    fields = {k: v for k, v in pred.items() if k != "reasoning"} if hasattr(pred, "items") else {"value": pred}
    return "; ".join(f"{k}={v}" for k, v in fields.items())[:2000]


def evaluate(
    program: dspy.Module,
    examples: list[dspy.Example],
    task: Task,
    *,
    lm: dspy.LM,
    meter: Meter,
    condition: str,
    role: str = "student",
    trace_sample: float | None = None,
) -> EvalResult:
    """Run `program` on each example with `lm`, scoring it with the task's metric (and corpus metric, if any).

    With `trace_sample`, that fraction of the examples is traced in MLflow, one trace each (`trainables.tracing`);
    None leaves tracing to whatever is configured (nothing, outside a trial)."""
    result = EvalResult(condition=condition)
    pairs: list[tuple[dspy.Example, Any]] = []
    for example in examples:
        example_id = str(example.get("id", ""))
        before = meter.total(role=role)
        work = partial(_attempt, program, example, task, lm)
        if trace_sample is None:
            attempt = work()
        else:
            on = tracing.chosen(example_id, trace_sample)
            attempt = tracing.traced_example(
                work, example_id=example_id, condition=condition, on=on, inputs=dict(example.inputs())
            )
        pred, score = attempt.pred, attempt.score
        after = meter.total(role=role)
        pairs.append((example, pred))
        result.records.append(
            ExampleRecord(
                example_id=example_id,
                condition=condition,
                prediction=_prediction_text(pred),
                score=score,
                latency_ms=attempt.latency_ms,
                prompt_tokens=after.prompt_tokens - before.prompt_tokens,
                completion_tokens=after.completion_tokens - before.completion_tokens,
                lm_calls=after.calls - before.calls,
                error=attempt.error,
            )
        )
    if task.corpus_metric is not None:
        result.corpus_score = float(task.corpus_metric(pairs))
    return result
