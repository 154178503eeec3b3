"""Testing by betting for the mean of a bounded score: the capital processes behind the fixed-n interval of
continuous scores (`trainables.stats.paired`), the trials' confidence sequence (`trainables.stats.sequential`) and
the race's one-sided tests at the margin (`trainables.stats.race`).

Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B 86(1), 2024;
arXiv:2010.09686). For x_t in [0, 1] and a candidate mean m, a gambler who bets λ_t (chosen from x_1 … x_{t−1})
that x_t lands above m multiplies their capital by 1 + λ_t (x_t − m). If the true mean is m (or below it, for
λ_t ≥ 0) the capital is a nonnegative supermartingale, so by Ville's inequality it ever reaches 1/α with
probability at most α: rejecting m then is valid at any sample size and any stopping time, with no asymptotics.
That is why this project uses it where no exact test of the paired 0/1 kind exists (bounded continuous scores)
and wherever a comparison is looked at more than once.

Everything works on x = (d + 1) / 2 for paired differences d in [−1, 1].
"""

from __future__ import annotations

import math

import numpy as np

TRUNCATION = 0.75
"""c: a bet is at most c / m (or c / (1 − m)) of the capital, so every factor stays ≥ 1 − c > 0. The paper
suggests 1/2 or 3/4; 3/4 decided large effects sooner in the simulation (BENCHMARKS.md) at the same validity."""


def as_x(diffs: np.ndarray) -> np.ndarray:
    """Paired differences in [−1, 1] as scores in [0, 1]."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim < 1 or np.any(np.abs(d) > 1 + 1e-9):
        raise ValueError("paired differences must be a sequence in [-1, 1]")
    return np.clip((d + 1) / 2, 0.0, 1.0)


def running_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) known before each step along the last axis: from x_1 … x_{t−1}, starting at 1/2 and 1/4
    (the paper's regularized estimates), so a bet never looks at its own outcome."""
    t = np.arange(1, x.shape[-1] + 1)
    mean = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    var = (0.25 + np.cumsum((x - mean) ** 2, axis=-1)) / (t + 1)
    first = np.ones((*x.shape[:-1], 1))
    mean_before = np.concatenate((0.5 * first, mean[..., :-1]), axis=-1)
    var_before = np.concatenate((0.25 * first, var[..., :-1]), axis=-1)
    return mean_before, var_before


def plugin_bets(x: np.ndarray, alpha: float, horizon: int | None = None) -> np.ndarray:
    """Predictable plug-in bet sizes (the paper's PrPl-EB λ_t, eq. (26)) along the last axis: sized for a
    confidence sequence (√(2 log(2/α) / (σ̂² t log(1 + t)))), or with `horizon` = n for a fixed-n interval
    (√(2 log(2/α) / (σ̂² n)), the paper's Section 4 "betting CI" choice), which is tighter at that n."""
    _, var_before = running_moments(x)
    t = np.arange(1, x.shape[-1] + 1)
    scale = horizon if horizon is not None else t * np.log1p(t)
    out: np.ndarray = np.sqrt(2 * math.log(2 / alpha) / (var_before * scale))
    return out


def grapa_bets(x: np.ndarray, m: np.ndarray | float, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """aGRAPA bets (the paper's Section 5.2) for the steps of `x` from `start` on (rows) against each candidate
    mean `m` (columns): (μ̂ − m) / (σ̂² + (μ̂ − m)²) from the earlier steps, on "above m" where the mean so far is
    above m and on "below m" where it is below; the other side bets nothing. It grows the capital against one
    point as fast as a plug-in bet can, which is what a test of the margin wants."""
    mean_before, var_before = running_moments(x)
    mean_before, var_before = mean_before[..., start:], var_before[..., start:]
    gap = mean_before[..., :, None] - m
    lam = gap / (var_before[..., :, None] + gap**2)
    return np.maximum(lam, 0.0), np.maximum(-lam, 0.0)


def log_wealth_up(x: np.ndarray, bets: np.ndarray, m: np.ndarray | float, axis: int = 0) -> np.ndarray:
    """log capital of the bets that x lands above m after each step along `axis` (e.g. x: steps × 1, bets:
    steps × m's), each bet truncated at c / m."""
    lam = np.minimum(bets, TRUNCATION / m)
    out: np.ndarray = np.cumsum(np.log1p(lam * (x - m)), axis=axis)
    return out


def log_wealth_down(x: np.ndarray, bets: np.ndarray, m: np.ndarray | float, axis: int = 0) -> np.ndarray:
    """log capital of the bets that x lands below m, each bet truncated at c / (1 − m)."""
    lam = np.minimum(bets, TRUNCATION / (1 - m))
    out: np.ndarray = np.cumsum(np.log1p(-lam * (x - m)), axis=axis)
    return out


def hedged(log_up: np.ndarray, log_down: np.ndarray) -> np.ndarray:
    """log of the hedged capital: half the wealth on each side (θ = 1/2), a two-sided test of m."""
    out: np.ndarray = np.logaddexp(log_up, log_down) + math.log(0.5)
    return out
