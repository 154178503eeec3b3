"""The trial's comparison of its two conditions: on every test example (a fixed trial), or a batch at a time until
the stopping rule decides (a sequential trial, `trainables.stats.sequential`), where the unevaluated examples cost
nothing."""

from __future__ import annotations

import logging

import dspy
import numpy as np

from trainables.context import TrialContext
from trainables.evaluate import joined
from trainables.record.scores import EvalResult
from trainables.stats.paired import PairedDelta, paired_delta
from trainables.stats.sequential import Decision, StopRule, check

log = logging.getLogger(__name__)


def evaluate_sequentially(
    ctx: TrialContext, baseline_program: dspy.Module, compiled: dspy.Module
) -> tuple[EvalResult, EvalResult, Decision]:
    """Baseline and optimized on the same test examples, a batch at a time in the seeded test order, until the
    stopping rule decides."""
    trial, test = ctx.trial, ctx.splits.test
    n_max = len(test)
    rule = StopRule(n_max=n_max, n_min=min(trial.n_min, n_max), equivalence_pp=trial.equivalence_pp,
                    check_every=trial.check_every, futility=trial.futility, seed=trial.seed)  # fmt: skip
    parts: tuple[list[EvalResult], list[EvalResult]] = ([], [])
    done = 0
    for look in rule.looks():
        batch = test[done:look]
        base = ctx.evaluate(baseline_program, "baseline", batch)
        # nothing changed: the same answers, no calls
        unchanged = compiled is baseline_program
        opt = base.relabel("optimized") if unchanged else ctx.evaluate(compiled, "optimized", batch)
        parts[0].append(base)
        parts[1].append(opt)
        done = look
        baseline, optimized = joined(parts[0], ctx.task), joined(parts[1], ctx.task)
        a, b = aligned(baseline, optimized)
        decision = check(rule, b - a)
        if decision is not None:
            log.info("%s: stopped after %d of %d examples: %s", trial.run_name, decision.n, n_max, decision.reason)
            return baseline, optimized, decision
    raise AssertionError("a stopping rule always decides at its last look")


def comparison(baseline: EvalResult, optimized: EvalResult, decision: Decision | None) -> PairedDelta:
    """The trial's own comparison: the sequence's interval if it stopped sequentially, else the paired test."""
    a, b = aligned(baseline, optimized)
    return decision.paired(b - a) if decision is not None else paired_delta(a, b)


def aligned(a: EvalResult, b: EvalResult) -> tuple[np.ndarray, np.ndarray]:
    """Per-example scores of two conditions on the examples both have, in the same order."""
    scores_b = {r.example_id: r.score for r in b.records}
    both = [r for r in a.records if r.example_id in scores_b]
    return np.array([r.score for r in both]), np.array([scores_b[r.example_id] for r in both])
