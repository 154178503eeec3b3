"""Sequential paired evaluation: stop scoring a trial's test examples once the difference is decided.

A trial with `stopping: sequential` scores baseline and optimized on the same examples, in the seeded test order,
`check_every` at a time. After each batch it updates a 95% confidence sequence for the mean paired per-example
difference (optimized − baseline, in [−1, 1]) and stops, after at least `n_min` examples, when the sequence

- lies above 0 (`decided_improved`) or below 0 (`decided_hurt`), or
- lies within ±`equivalence_pp` (`equivalent`: no effect that large either way),

or when `n_eval` examples are done (`max_reached`). Opt-in (`futility` > 0): it also stops (`futile`) when too few
continuations, resampled from the differences seen so far, would decide by `n_eval` (`decide_chance`).

Which sequence, and why. A confidence sequence covers the true mean at every sample size at once with probability
≥ 95%, so the trial may look after every batch and stop when it likes (a fixed-n interval checked this way would
reject a true null far more often than 5%). Of the sequences for bounded means, the betting ones are the tightest
in practice: Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B 86(1), 2024;
arXiv:2010.09686), Theorem 3, the hedged capital process with predictable plug-in bets (their eq. (26)-(27) with
the PrPl-EB bet sizes of Section 3.3), which adapt to the variance: most paired differences are 0 (both conditions
right or both wrong), so the sequence narrows much faster than Hoeffding's. It is implemented here on a grid of
candidate means (about 40 lines of numpy): `confseq`, the authors' package, is a C++ build that pins pybind11 2.6
and pulls in matplotlib, multiprocess and pytest at run time (last release 2023-01; its build fails on Python
3.11 here), and `sequential-analysis` is AGPL-3.0, which this Apache-2.0 project does not impose on its users.
`tests/trainables/test_sequential.py` checks coverage and the false-positive rate by simulation.

The p-value is the sequence's own: 1 / (the largest capital at 0 so far), which is ≤ α exactly when the sequence
has excluded 0 (Ville's inequality makes it valid at any stopping time), so interval, p-value and verdict come
from one procedure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from trainables.stats import betting
from trainables.stats.paired import ALPHA, CONFIDENCE_SEQUENCE, PairedDelta, discordant_outcomes

StopReason = Literal["decided_improved", "decided_hurt", "equivalent", "futile", "max_reached"]
STOP_REASONS: tuple[StopReason, ...] = ("decided_improved", "decided_hurt", "equivalent", "futile", "max_reached")

_GRID = np.linspace(0.0, 1.0, 2001)[1:-1]
"""Candidate means of x = (d + 1) / 2 in (0, 1); 0.5 (d = 0) is on it, so "excludes 0" is read off exactly."""
_ZERO = int(np.argmin(np.abs(_GRID - 0.5)))


@dataclass(frozen=True)
class Look:
    """The sequence after n examples, in percentage points of the mean difference."""

    n: int
    ci_low: float
    ci_high: float
    p_value: float


@dataclass
class RunningSequence:
    """The confidence sequence carried from one batch of differences to the next: the capital at every candidate
    mean and which candidates have been rejected so far, so a trial that looks after every batch pays only for
    the new examples.

    The sequence is the running intersection: a candidate mean rejected once stays out (valid: the capital ever
    reaching 1/α has probability ≤ α under the truth). The interval is the span of the candidates never rejected,
    and nothing else moves it: an earlier version also dropped the candidates on the far side of 0 once 0 was
    rejected, and took a midpoint when the intersection emptied, each of which could lift an end without its
    mean being rejected. Once every candidate has been rejected (an event of probability ≤ α) the interval stays
    where it last was."""

    alpha: float = ALPHA
    n: int = 0
    low: float = -1.0
    high: float = 1.0
    best_at_zero: float = 0.0
    _up: np.ndarray = field(default_factory=lambda: np.zeros(len(_GRID)))
    _down: np.ndarray = field(default_factory=lambda: np.zeros(len(_GRID)))
    _out: np.ndarray = field(default_factory=lambda: np.zeros(len(_GRID), dtype=bool))

    @property
    def look(self) -> Look:
        """The sequence now (after `n` differences)."""
        return Look(self.n, float(100 * self.low), float(100 * self.high), min(1.0, math.exp(-self.best_at_zero)))

    def extend(self, diffs: np.ndarray) -> list[Look]:
        """Take in every difference so far (`diffs`: the whole sequence, of which the first `n` were seen) and
        return one `Look` per new example. The bets depend on all earlier examples, so the whole sequence is
        passed; only the new part is scored against the grid."""
        x = betting.as_x(diffs)
        if x.ndim != 1:
            raise ValueError("paired differences must be a 1-D sequence in [-1, 1]")
        if len(x) < self.n:
            raise ValueError(f"the sequence had {self.n} differences; it cannot shrink to {len(x)}")
        new = x[self.n :]
        if len(new) == 0:
            return []
        m = _GRID[None, :]
        bets = betting.plugin_bets(x, self.alpha)[self.n :, None]
        up = self._up + betting.log_wealth_up(new[:, None], bets, m)
        down = self._down + betting.log_wealth_down(new[:, None], bets, m)
        log_capital = betting.hedged(up, down)
        self._up, self._down = up[-1], down[-1]
        rejected = np.logical_or.accumulate(log_capital >= math.log(1 / self.alpha), axis=0) | self._out
        self._out = rejected[-1]
        looks = []
        for i in range(len(new)):
            inside = np.flatnonzero(~rejected[i])
            if len(inside):
                self.low, self.high = 2 * _GRID[inside[0]] - 1, 2 * _GRID[inside[-1]] - 1
            self.best_at_zero = max(self.best_at_zero, float(log_capital[i, _ZERO]))
            p = min(1.0, math.exp(-self.best_at_zero))
            looks.append(Look(self.n + i + 1, float(100 * self.low), float(100 * self.high), p))
        self.n = len(x)
        return looks


def confidence_sequence(diffs: np.ndarray, alpha: float = ALPHA) -> list[Look]:
    """The running-intersection confidence sequence after each of `diffs` (paired differences in [−1, 1], in
    evaluation order): one `Look` per example."""
    return RunningSequence(alpha).extend(np.asarray(diffs, dtype=float))


FUTILITY_PATHS = 200


def decide_chance(diffs: np.ndarray, n_max: int, seed: int, alpha: float = ALPHA) -> float:
    """The share of continuations to `n_max` in which the sequence would exclude 0, drawing the remaining
    differences from those seen so far (stochastic curtailment with the empirical distribution). Stopping when
    this is small can only give up a decision, never make one, so it adds no false positives."""
    x = betting.as_x(diffs)
    rest = n_max - len(x)
    if rest <= 0 or len(x) == 0:
        return 0.0
    rng = np.random.default_rng([seed, len(x)])
    paths = np.concatenate((np.broadcast_to(x, (FUTILITY_PATHS, len(x))),
                            rng.choice(x, size=(FUTILITY_PATHS, rest))), axis=1)  # fmt: skip
    return float(_rejects_zero(paths, alpha).mean())


@dataclass(frozen=True)
class StopRule:
    """When a sequential trial stops (the grid's `n_min`, `equivalence_pp`, `check_every`, and `n_eval` as the
    maximum)."""

    n_max: int
    n_min: int = 10
    equivalence_pp: float = 10.0
    check_every: int = 5
    futility: float = 0.0
    """Stop as `futile` when fewer than this share of resampled continuations would decide (0: never)."""
    seed: int = 0
    """Seeds the futility resampling, so a trial stops at the same example when run again."""

    def looks(self) -> list[int]:
        """The example counts after which the sequence is checked: every `check_every` from `n_min`, and `n_max`."""
        first = min(max(self.n_min, self.check_every), self.n_max)
        steps = list(range(first, self.n_max, self.check_every))
        return [*steps, self.n_max] if not steps or steps[-1] != self.n_max else steps

    def reason(self, look: Look, diffs: np.ndarray) -> StopReason | None:
        """Why the trial stops at this look (`diffs`: the differences up to it), or None to go on."""
        if look.ci_low > 0:
            return "decided_improved"
        if look.ci_high < 0:
            return "decided_hurt"
        if -self.equivalence_pp <= look.ci_low and look.ci_high <= self.equivalence_pp:
            return "equivalent"
        if look.n >= self.n_max:
            return "max_reached"
        if self.futility > 0 and decide_chance(diffs, self.n_max, self.seed) < self.futility:
            return "futile"
        return None


@dataclass(frozen=True)
class Decision:
    """How a sequential comparison ended: at which example, why, and the sequence there."""

    n: int
    reason: StopReason
    look: Look
    n_max: int
    path: list[Look]
    """The sequence at every check, for the record (`sequence.csv`, metric history)."""

    def paired(self, diffs: np.ndarray) -> PairedDelta:
        """The comparison as the report's tables hold it, with the sequence's interval and p-value."""
        d = np.asarray(diffs, dtype=float)[: self.n]
        return PairedDelta(self.n, 100 * float(d.mean()), self.look.ci_low, self.look.ci_high, self.look.p_value,
                           int((d > 0).sum()), int((d < 0).sum()), test=CONFIDENCE_SEQUENCE)  # fmt: skip


def check(rule: StopRule, diffs: np.ndarray) -> Decision | None:
    """Apply `rule` to the differences seen so far (checked only at the rule's looks); None while it goes on."""
    d = np.asarray(diffs, dtype=float)
    looks = [k for k in rule.looks() if k <= len(d)]
    if not looks:
        return None
    sequence = confidence_sequence(d[: looks[-1]])
    path = [sequence[k - 1] for k in looks]
    for k, look in zip(looks, path, strict=True):
        why = rule.reason(look, d[:k])
        if why is not None:
            return Decision(k, why, look, rule.n_max, path[: looks.index(k) + 1])
    return None


def run(rule: StopRule, diffs: np.ndarray) -> Decision:
    """Where `rule` stops on a whole sequence of differences (at most `n_max` are used): what a trial would do
    had it evaluated them in this order. Used by the simulation benchmark and the tests."""
    d = np.asarray(diffs, dtype=float)[: rule.n_max]
    decision = check(rule, d)
    if decision is None:
        raise ValueError(f"{len(d)} differences are fewer than the rule's n_max {rule.n_max}")
    return decision


def detectable_effect_pp(n_max: int, discordance: float, *, power: float = 0.8, alpha: float = ALPHA,
                         paths: int = 400, seed: int = 0) -> float:  # fmt: skip
    """The smallest mean paired difference (pp, on a 1-pp grid) for which the sequence excludes 0 within `n_max`
    examples with probability `power` (looking after every example), for 0/1 scores under the model of
    `trainables.stats.paired.discordant_outcomes`; by simulation (`paths` seeded runs). NaN if none is."""
    uniforms = np.random.default_rng(seed).random((paths, n_max))
    for effect_pp in range(1, 101):
        up, down = discordant_outcomes(discordance, effect_pp / 100)
        if up + down > 1:
            break
        x = np.where(uniforms < up, 1.0, np.where(uniforms < up + down, 0.0, 0.5))
        if float(_rejects_zero(x, alpha).mean()) >= power:
            return float(effect_pp)
    return float("nan")


def _rejects_zero(paths: np.ndarray, alpha: float) -> np.ndarray:
    """Per path (rows of x in [0, 1]): whether the sequence's capital at 0 ever reaches 1/α."""
    bets = betting.plugin_bets(paths, alpha)
    up, down = betting.log_wealth_up(paths, bets, 0.5, axis=1), betting.log_wealth_down(paths, bets, 0.5, axis=1)
    return np.asarray((betting.hedged(up, down) >= math.log(1 / alpha)).any(axis=1))
