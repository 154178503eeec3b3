"""Evaluation of a program on examples, one example at a time, keeping a per-example record.

A model that breaks DSPy's output format scores the example as wrong (and the failure is counted); a model
server that is down fails the trial instead, because a score of 0 from a dead server would be a lie.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import dspy
import numpy as np
from dspy.utils.exceptions import AdapterParseError, ContextWindowExceededError

from trainables.lm import cache as lm_cache
from trainables.lm import slots
from trainables.lm.client import Usage, example_usage
from trainables.record import fields, tracing
from trainables.record.scores import EvalResult, ExampleRecord
from trainables.tasks.base import Task


@dataclass
class Attempt:
    """One example run once: the prediction (None if it failed), its score, and what went wrong."""

    pred: Any
    score: float
    error: str
    latency_ms: float
    """The program call only, not the metric (the code task's metric runs the code)."""
    usage: Usage
    """The LM calls this example made (its own, even when other examples ran at the same time)."""
    rationale: str = ""
    """Why it scored what it did, for a reviewer (traced examples only: the task's feedback sentence)."""
    trace_id: str = ""
    strict: float = 0.0
    """The task's strict score of the same prediction (`Task.strict_score`)."""


FAILED_BECAUSE = {
    "parse": "The reply did not fill the output fields in the format the adapter asked for (DSPy could not parse "
    "it), so it scores 0.",
    "context_window": "The prompt was longer than the model's context window and the server refused it; scores 0.",
}


def _attempt(program: dspy.Module, example: dspy.Example, task: Task, lm: dspy.LM, explain: bool = False) -> Attempt:
    start = time.perf_counter()
    pred, error = None, ""
    with example_usage() as usage:
        try:
            with lm_cache.scope() as cached, dspy.context(lm=lm):
                pred = program(**example.inputs())
        except (AdapterParseError, ValueError, RecursionError):
            # ValueError/RecursionError: DSPy's JSON fallback hands malformed output to json_repair, which gives up
            # on pathological text (e.g. thousands of nested brackets) with these instead of a parse error.
            error = "parse"
            lm_cache.forget_scope(cached)  # a retry asks the model again rather than replaying what failed
        except ContextWindowExceededError:
            error = "context_window"
    latency_ms = 1000.0 * (time.perf_counter() - start)
    if pred is None:
        return Attempt(pred, 0.0, error, latency_ms, usage, rationale=FAILED_BECAUSE.get(error, ""))
    if explain and task.feedback is not None:
        # the same score as `metric` (a task's feedback is its metric plus a sentence), in one run of the metric:
        # the code task's runs the program in the sandbox
        judged = task.feedback(example, pred)
        score, rationale = float(judged.score), str(judged.feedback)
    else:
        score, rationale = float(task.metric(example, pred)), ""
    # a task without a stricter score has it equal to the headline: not worth a second run of the metric
    strict = task.strict_score(example, pred) if task.strict is not None else score
    return Attempt(pred, score, error, latency_ms, usage, rationale=rationale, strict=strict)


def evaluate(
    program: dspy.Module,
    examples: list[dspy.Example],
    task: Task,
    *,
    lm: dspy.LM,
    condition: str,
    traced: tracing.Traced | None = None,
    concurrency: int | Callable[[], int] = 1,
) -> EvalResult:
    """Run `program` on each example with `lm`, scoring it with the task's metric (and corpus metric, if any).

    With `traced`, its fraction of the examples is traced in MLflow, one trace each with the example's gold answer
    and score as assessments (`trainables.record.tracing`); None leaves tracing to whatever is configured (nothing,
    outside a trial). `concurrency` examples are evaluated
    at once — a number, or a function asked before each start (the trial's current share of its server's slots,
    `trainables.lm.slots`) — in threads, each in a copy of the caller's context (DSPy's settings, the example's own
    accounting). The trial holds that many slots, so an example's latency does not include waiting for one; each
    record also says how many examples were in flight when it started. Records stay in example order."""
    work = [partial(_one, program, example, task, lm, condition, traced) for example in examples]
    if callable(concurrency):
        attempts, in_flight, mean = _run(work, concurrency)
    elif concurrency > 1:
        attempts, in_flight, mean = _run(work, lambda: int(concurrency))
    else:  # in this thread: nothing to wait for but the model
        attempts, in_flight, mean = [w() for w in work], [1] * len(work), 1.0
    result = EvalResult(condition=condition, mean_in_flight=mean)
    for example, attempt, started_with in zip(examples, attempts, in_flight, strict=True):
        result.records.append(
            ExampleRecord(
                example_id=str(example.get("id", "")),
                condition=condition,
                prediction=fields.text(fields.outputs(attempt.pred)),
                score=attempt.score,
                latency_ms=attempt.latency_ms,
                prompt_tokens=attempt.usage.prompt_tokens,
                completion_tokens=attempt.usage.completion_tokens,
                lm_calls=attempt.usage.calls,
                error=attempt.error,
                in_flight=started_with,
                truncated_calls=attempt.usage.truncated_calls,
                trace_id=attempt.trace_id,
                strict_score=attempt.strict,
            )
        )
    result.predictions = [(ex, a.pred) for ex, a in zip(examples, attempts, strict=True)]
    _corpus_scores(result, task)
    return result


def _corpus_scores(result: EvalResult, task: Task) -> None:
    """The task's corpus metric, and its strict one, over the result's predictions (tasks that have them)."""
    if task.corpus_metric is not None:
        result.corpus_score = float(task.corpus_metric(result.predictions))
        strict = task.strict_corpus or task.corpus_metric
        result.strict_corpus_score = float(strict(result.predictions))


def joined(parts: Sequence[EvalResult], task: Task) -> EvalResult:
    """Batches of one condition as one result: records in order, the corpus metric over all of them (extraction's
    micro F1 is not a mean of the batches' scores), examples in flight weighted by each batch's size."""
    if not parts:
        raise ValueError("nothing evaluated")
    records = [r for part in parts for r in part.records]
    predictions = [p for part in parts for p in part.predictions]
    weights = [max(1, len(part.records)) for part in parts]
    mean = float(np.average([part.mean_in_flight for part in parts], weights=weights))
    result = EvalResult(parts[0].condition, records, mean_in_flight=mean, predictions=predictions)
    _corpus_scores(result, task)
    return result


MAX_THREADS = 32
"""Upper bound on examples in flight in one trial, whatever it is granted."""


def _run(work: Sequence[Callable[[], Attempt]], limit: Callable[[], int]) -> tuple[list[Attempt], list[int], float]:
    """Run every `work` item, at most `limit()` at once (asked again whenever one ends, and every `POLL_S`);
    returns the attempts in order, the number in flight when each started, and the time-averaged number in flight.
    The first error stops new starts and is raised once the running ones end."""
    attempts: list[Attempt | None] = [None] * len(work)
    started_with = [1] * len(work)
    if len(work) <= 1:
        return [w() for w in work], started_with, 1.0
    t0 = last = time.perf_counter()
    area = 0.0
    with ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="arb-eval") as pool:
        running: dict[Future[Attempt], int] = {}
        nxt = 0
        while nxt < len(work) or running:
            cap = min(MAX_THREADS, max(1, limit()))
            while nxt < len(work) and len(running) < cap:
                started_with[nxt] = len(running) + 1
                running[pool.submit(contextvars.copy_context().run, work[nxt])] = nxt
                nxt += 1
            done, _ = wait(running, timeout=slots.POLL_S, return_when=FIRST_COMPLETED)
            now = time.perf_counter()
            area += len(running) * (now - last)
            last = now
            for future in done:
                attempts[running.pop(future)] = future.result()  # an error: the pool waits for the others
    wall = time.perf_counter() - t0
    return [a for a in attempts if a is not None], started_with, (area / wall if wall > 0 else 1.0)


def _one(
    program: dspy.Module, example: dspy.Example, task: Task, lm: dspy.LM, condition: str, traced: tracing.Traced | None
) -> Attempt:
    """One example, traced (with the task's feedback sentence as the score's rationale) if it is sampled."""
    if traced is None:
        return _attempt(program, example, task, lm)
    example_id = str(example.get("id", ""))
    on = tracing.chosen(example_id, traced.sample)
    review = tracing.Review(fields.inputs(example), fields.gold(example, task.expected), task.metric_name)
    return tracing.traced_example(
        partial(_attempt, program, example, task, lm, explain=on),
        example_id=example_id, condition=condition, on=on, traced=traced, review=review,
    )  # fmt: skip
