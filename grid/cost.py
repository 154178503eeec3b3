"""What a trial is expected to cost, in seconds of its model server's time: how the searcher orders trials.

Longest first: a sweep whose long trials start last ends with one of them running while every other slot idles.
The estimate is LM calls × seconds per call:

- calls, from the trial's own settings: the test examples of each evaluated condition, plus the optimizer's
  budget (bootstrapped train examples, candidates × validation examples), times a per-(task, optimizer)
  correction learned from the trials that have finished (a ReAct task makes several calls per example);
- seconds per call, per model: equal for all until a trial of that model has finished, then measured.
"""

from __future__ import annotations

from collections import defaultdict

from trainables import optimizers
from trainables.optimizers import get_optimizer
from trainables.record.schema import Metric
from trainables.vocabulary import Trial

PRIOR_CALLS_PER_EXAMPLE = {"agentic": 4.0}
"""Calls per example before any trial has finished: a ReAct loop takes several steps; the rest take one."""


def expected_calls(trial: Trial) -> float:
    """LM calls a trial would make at one call per example and optimizer step (before learned corrections): its
    optimizer's count (`trainables.optimizers.Optimizer.conditions`, `search_calls`)."""
    return optimizers.expected_calls(get_optimizer(trial.optimizer), trial)


class CostModel:
    """Expected seconds per trial, refined by `observe` as trials finish."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        """(task, optimizer) → [observed calls, expected calls] over finished trials."""
        self._speed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        """model → [server seconds, calls] over finished trials."""

    def calls(self, trial: Trial) -> float:
        observed, expected = self._calls[(trial.task, trial.optimizer)]
        factor = observed / expected if expected else PRIOR_CALLS_PER_EXAMPLE.get(trial.task, 1.0)
        return expected_calls(trial) * factor

    def seconds_per_call(self, model: str) -> float:
        seconds, calls = self._speed[model]
        if calls:
            return seconds / calls
        known = [s / c for s, c in self._speed.values() if c]
        return sum(known) / len(known) if known else 1.0

    def estimate(self, trial: Trial) -> float:
        return self.calls(trial) * self.seconds_per_call(trial.model)

    def observe(self, trial: Trial, result: dict[str, float]) -> None:
        """Learn from a finished trial's metrics (`lm_calls`, `eval_seconds`, `optimize_seconds`, `eval_in_flight`);
        a reused trial (no work done) teaches nothing."""
        calls = float(result.get(Metric.LM_CALLS) or 0)
        if result.get("reused") or calls <= 0:
            return
        pair = self._calls[(trial.task, trial.optimizer)]
        pair[0] += calls
        pair[1] += expected_calls(trial)
        # wall time × requests in flight ≈ the server time the calls took
        busy = (float(result.get(Metric.EVAL_SECONDS) or 0) + float(result.get(Metric.OPTIMIZE_SECONDS) or 0)) * max(
            1.0, float(result.get(Metric.EVAL_IN_FLIGHT) or 1)
        )
        if busy > 0:
            speed = self._speed[trial.model]
            speed[0] += busy
            speed[1] += calls
