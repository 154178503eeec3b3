"""What a trial is expected to cost, in seconds of its model server's time: how the searcher orders trials.

Longest first: a sweep whose long trials start last ends with one of them running while every other slot idles.
The estimate is LM calls × seconds per call:

- calls, from the trial's own settings: the test examples of each evaluated condition, plus the optimizer's
  budget (bootstrapped train examples, candidates × validation examples), times a per-(task, optimizer)
  correction learned from the trials that have finished (a ReAct task makes several calls per example);
- seconds per call, per model: equal for all until a trial of that model has finished, then measured.
"""

from __future__ import annotations

import math
from collections import defaultdict

from trainables.vocabulary import GEPA_MINIBATCH, SIMBA_BSIZE, Trial

PRIOR_CALLS_PER_EXAMPLE = {"agentic": 4.0}
"""Calls per example before any trial has finished: a ReAct loop takes several steps; the rest take one."""
_MIPRO_AUTO_CANDIDATES = {"light": 6, "medium": 12, "heavy": 18}  # DSPy's MIPROv2 AUTO_RUN_SETTINGS["n"]


def gepa_budget(params: dict[str, object], n_labeled: int, n_val: int) -> int:
    """Metric calls (program runs) dspy.GEPA will make with these settings, as dspy 3.4.1 computes them:
    `max_metric_calls`; `max_full_evals` × (train + val); or `auto`'s budget (`GEPA.auto_budget` for one predictor:
    the seed's valset evaluation, 5 per candidate, N minibatches of 35 and periodic full evaluations)."""
    if params.get("max_metric_calls"):
        return int(str(params["max_metric_calls"]))
    if params.get("max_full_evals"):
        return int(str(params["max_full_evals"])) * (n_labeled + n_val)
    candidates = _MIPRO_AUTO_CANDIDATES.get(str(params.get("auto") or "light"), 6)
    steps = int(max(4 * math.log2(candidates), 1.5 * candidates))
    full_evals = (steps + 1) // 5 + 1 + (1 if steps < 5 else 0)
    return n_val + 5 * candidates + 35 * steps + full_evals * n_val


def expected_calls(trial: Trial) -> float:
    """LM calls a trial would make at one call per example and optimizer step (before learned corrections)."""
    p = trial.optimizer_params
    if trial.optimizer == "demo_ablation":
        return float(trial.n_eval * (trial.demos + 2))  # baseline, then k = 0 … demos
    conditions = 1 if trial.optimizer == "none" else 2
    calls = float(trial.n_eval * conditions)
    if trial.optimizer == "bootstrap":
        calls += trial.n_labeled * int(p.get("max_rounds", 1))
    elif trial.optimizer == "bootstrap_rs":
        candidates = int(p.get("num_candidate_programs", 4))
        calls += (candidates + 3) * trial.n_val + candidates * trial.n_labeled
    elif trial.optimizer == "mipro":
        candidates = int(p.get("num_candidates") or _MIPRO_AUTO_CANDIDATES.get(p.get("auto") or "light", 6))
        steps = int(p.get("num_trials") or max(2 * math.log2(max(candidates, 2)), 1.5 * candidates))
        calls += steps * trial.n_val + candidates * (trial.n_labeled + 1)
    elif trial.optimizer == "gepa":
        budget = gepa_budget(p, trial.n_labeled, trial.n_val)
        minibatch = int(p.get("reflection_minibatch_size", GEPA_MINIBATCH))
        calls += budget + budget / (2 * minibatch + trial.n_val)  # plus about one reflection call per proposal
    elif trial.optimizer == "simba":
        bsize, steps = int(p.get("bsize", SIMBA_BSIZE)), int(p.get("max_steps", 8))
        candidates = int(p.get("num_candidates", 6))
        # each step: the batch on `candidates` sampled programs, one rule/demo proposal each, the batch on the new
        # ones; then every kept candidate on the whole trainset
        calls += steps * (bsize * candidates * 2 + candidates) + candidates * trial.n_labeled
    return calls


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
        calls = float(result.get("lm_calls") or 0)
        if result.get("reused") or calls <= 0:
            return
        pair = self._calls[(trial.task, trial.optimizer)]
        pair[0] += calls
        pair[1] += expected_calls(trial)
        # wall time × requests in flight ≈ the server time the calls took
        busy = (float(result.get("eval_seconds") or 0) + float(result.get("optimize_seconds") or 0)) * max(
            1.0, float(result.get("eval_in_flight") or 1)
        )
        if busy > 0:
            speed = self._speed[trial.model]
            speed[0] += busy
            speed[1] += calls
