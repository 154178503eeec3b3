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

from trainables.stats.paired import ALPHA, CONFIDENCE_SEQUENCE, PairedDelta, discordant_outcomes

StopReason = Literal["decided_improved", "decided_hurt", "equivalent", "futile", "max_reached"]
STOP_REASONS: tuple[StopReason, ...] = ("decided_improved", "decided_hurt", "equivalent", "futile", "max_reached")

_GRID = np.linspace(0.0, 1.0, 2001)[1:-1]
"""Candidate means of x = (d + 1) / 2 in (0, 1); 0.5 (d = 0) is on it, so "excludes 0" is read off exactly."""
_ZERO = int(np.argmin(np.abs(_GRID - 0.5)))
_TRUNCATION = 0.75
"""c: a bet is at most c / m (or c / (1 − m)) of the capital, so every factor stays ≥ 1 − c > 0. The paper
suggests 1/2 or 3/4; 3/4 decided large effects sooner in the simulation (BENCHMARKS.md) at the same validity."""


@dataclass(frozen=True)
class Look:
    """The sequence after n examples, in percentage points of the mean difference."""

    n: int
    ci_low: float
    ci_high: float
    p_value: float


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bet sizes along the last axis (the paper's PrPl-EB λ_t): bet t uses only x_1 … x_{t−1},
    through the running mean and variance that start at 1/2 and 1/4."""
    t = np.arange(1, x.shape[-1] + 1)
    mean = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    var = (0.25 + np.cumsum((x - mean) ** 2, axis=-1)) / (t + 1)
    var_before = np.concatenate((np.full((*x.shape[:-1], 1), 0.25), var[..., :-1]), axis=-1)
    out: np.ndarray = np.sqrt(2 * math.log(2 / alpha) / (var_before * t * np.log1p(t)))
    return out


def _grapa_bets(x: np.ndarray, start: int, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """aGRAPA bets for steps start+1 … len(x) at every candidate mean `m` (a row): from the running mean and
    variance of the earlier steps (starting at 1/2 and 1/4, as the plug-in bets do), the bet on "above m" where the
    mean so far is above m and on "below m" where it is below; the other side bets nothing."""
    t = np.arange(1, len(x) + 1)
    mean = (0.5 + np.cumsum(x)) / (t + 1)
    var = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    mean_before = np.concatenate(([0.5], mean[:-1]))[start:, None]
    var_before = np.concatenate(([0.25], var[:-1]))[start:, None]
    gap = mean_before - m
    lam = gap / (var_before + gap**2)
    return np.maximum(lam, 0.0), np.maximum(-lam, 0.0)


def _log_capital(x: np.ndarray, bets: np.ndarray, m: np.ndarray | float, axis: int) -> np.ndarray:
    """log of the hedged capital against mean m after each step: half the wealth bets the mean is above m, half
    that it is below (θ = 1/2), each bet truncated at c / m or c / (1 − m)."""
    up = np.minimum(bets, _TRUNCATION / m)
    down = np.minimum(bets, _TRUNCATION / (1 - m))
    log_up = np.cumsum(np.log1p(up * (x - m)), axis=axis)
    log_down = np.cumsum(np.log1p(-down * (x - m)), axis=axis)
    out: np.ndarray = np.logaddexp(log_up, log_down) + math.log(0.5)
    return out


def _as_x(diffs: np.ndarray) -> np.ndarray:
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or np.any(np.abs(d) > 1 + 1e-9):
        raise ValueError("paired differences must be a 1-D sequence in [-1, 1]")
    return np.clip((d + 1) / 2, 0.0, 1.0)


@dataclass
class RunningSequence:
    """The confidence sequence carried from one batch of differences to the next: the capital at every candidate
    mean and the running intersection so far, so a race that looks after every round pays only for the new
    examples (recomputing from the first example each round grows quadratically with the rounds)."""

    alpha: float = ALPHA
    bets: Literal["plug-in", "grapa"] = "plug-in"
    """How each step's bet is sized: `plug-in` (PrPl-EB, the sequential trials': one size for every candidate mean,
    tuned to the interval's width) or `grapa` (aGRAPA, Waudby-Smith & Ramdas 2024 Section 5.2: per candidate mean
    m, the growth-rate-adapted bet (μ̂ − m) / (σ̂² + (μ̂ − m)²), which rejects a given m sooner; for a race whose
    question is one point, the margin)."""
    n: int = 0
    low: float = -1.0
    high: float = 1.0
    best_at_zero: float = 0.0
    _up: np.ndarray = field(default_factory=lambda: np.zeros(len(_GRID)))
    _down: np.ndarray = field(default_factory=lambda: np.zeros(len(_GRID)))

    @property
    def look(self) -> Look:
        """The sequence now (after `n` differences)."""
        return Look(self.n, float(100 * self.low), float(100 * self.high), min(1.0, math.exp(-self.best_at_zero)))

    def extend(self, diffs: np.ndarray) -> list[Look]:
        """Take in every difference so far (`diffs`: the whole sequence, of which the first `n` were seen) and
        return one `Look` per new example. The bets depend on all earlier examples, so the whole sequence is
        passed; only the new part is scored against the grid."""
        x = _as_x(diffs)
        if len(x) < self.n:
            raise ValueError(f"the sequence had {self.n} differences; it cannot shrink to {len(x)}")
        new = x[self.n :]
        if len(new) == 0:
            return []
        m = _GRID[None, :]
        if self.bets == "plug-in":
            bet_up = bet_down = _bets(x, self.alpha)[self.n :, None]
        else:
            bet_up, bet_down = _grapa_bets(x, self.n, m)
        step = new[:, None] - m
        up = self._up + np.cumsum(np.log1p(np.minimum(bet_up, _TRUNCATION / m) * step), axis=0)
        down = self._down + np.cumsum(np.log1p(-np.minimum(bet_down, _TRUNCATION / (1 - m)) * step), axis=0)
        log_capital = np.logaddexp(up, down) + math.log(0.5)
        self._up, self._down = up[-1], down[-1]
        rejected = log_capital >= math.log(1 / self.alpha)
        observed = np.cumsum(x)[self.n :] / np.arange(self.n + 1, len(x) + 1)
        looks = []
        for i in range(len(new)):
            keep = ~rejected[i]
            if rejected[i, _ZERO]:  # 0 is out: keep only the side where the estimate is, so the interval excludes it
                keep &= (_GRID > 0.5) if observed[i] > 0.5 else (_GRID < 0.5)
            inside = _GRID[keep]
            if len(inside):
                self.low, self.high = max(self.low, 2 * inside[0] - 1), min(self.high, 2 * inside[-1] - 1)
            if self.low > self.high:  # the running intersection emptied (possible, rarely): keep the point it closed on
                self.low = self.high = (self.low + self.high) / 2
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
    x = _as_x(diffs)
    rest = n_max - len(x)
    if rest <= 0 or len(x) == 0:
        return 0.0
    rng = np.random.default_rng([seed, len(x)])
    paths = np.concatenate((np.broadcast_to(x, (FUTILITY_PATHS, len(x))),
                            rng.choice(x, size=(FUTILITY_PATHS, rest))), axis=1)  # fmt: skip
    log_capital = _log_capital(paths, _bets(paths, alpha), 0.5, axis=1)
    return float((log_capital >= math.log(1 / alpha)).any(axis=1).mean())


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
        log_capital = _log_capital(x, _bets(x, alpha), 0.5, axis=1)
        if float((log_capital >= math.log(1 / alpha)).any(axis=1).mean()) >= power:
            return float(effect_pp)
    return float("nan")
