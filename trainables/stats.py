"""Paired statistics for deltas measured on the same test examples (shared by a trial, which describes its own
result, and the analysis, which compares many).

With n = 50 examples a few points of delta is noise. Every comparison here is paired by example id:
the bootstrap resamples examples (not scores) and the exact test counts examples that moved up vs down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom

ALPHA = 0.05
N_BOOT = 2000


@dataclass(frozen=True)
class PairedDelta:
    """b − a in percentage points, with its paired 95% bootstrap CI and exact sign-test p-value."""

    n: int
    delta_pp: float
    ci_low: float
    ci_high: float
    p_value: float
    up: int
    """Examples where b scored higher than a."""
    down: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA and (self.ci_low > 0 or self.ci_high < 0)


def paired_delta(a: np.ndarray, b: np.ndarray, *, seed: int = 0, n_boot: int = N_BOOT) -> PairedDelta:
    """Compare per-example scores `b` against `a` (same examples, same order, scores in [0, 1]).

    The exact test is McNemar's for 0/1 scores (a binomial test on the discordant pairs) and the sign test for
    graded scores, which is the same computation: ties carry no information about direction and are dropped.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return PairedDelta(0, float("nan"), float("nan"), float("nan"), 1.0, 0, 0)
    diff = b - a
    boots = diff[_resample_index(n, n_boot, seed)].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    up, down = int((diff > 0).sum()), int((diff < 0).sum())
    # two-sided exact binomial test at 1/2 (what scipy's binomtest computes, without its per-call overhead)
    p = min(1.0, 2.0 * float(binom.cdf(min(up, down), up + down, 0.5))) if up + down else 1.0
    return PairedDelta(n, 100 * float(diff.mean()), 100 * float(low), 100 * float(high), float(p), up, down)


@lru_cache(maxsize=64)
def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resampling indices, drawn once per (n, n_boot, seed) and shared by every comparison of that size.

    Sharing is what makes a report on thousands of runs fast, and it keeps each comparison reproducible.
    """
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    index.setflags(write=False)
    return index


def outcome_label(status: str, delta_pp: float, n_eval: int) -> str:
    """Phase 5's outcome of an optimization: `broken` (compile failed or errored), `responsive` (gain beyond half
    the noise floor at this n) or `resistant` (no such gain)."""
    if status != "finished":
        return "broken"
    return "responsive" if delta_pp > noise_floor_pp(n_eval) / 2 else "resistant"


def noise_floor_pp(n: int) -> float:
    """Half-width (pp) of a 95% interval for a difference of two scores on n examples, worst case.

    Worst case means scores near 50% and no pairing benefit: 1.96 * sqrt(2 * 0.25 / n). At n = 50 this is
    about 19.6 pp, so a 4 pp delta on 50 examples says nothing without the paired test.
    """
    return float("nan") if n <= 0 else 100 * 1.96 * float(np.sqrt(0.5 / n))


def delta_verdict(d: PairedDelta) -> str:
    """Optimized against baseline: improved / worse only where the paired test says so."""
    if d.n == 0:
        return "no data"
    if d.significant:
        return "improved" if d.delta_pp > 0 else "worse"
    return "no significant change"


def gap_verdict(d: PairedDelta, margin_pp: float = 5.0) -> str:
    """Local against API (d = local − API): matched only if the whole CI lies within ±margin."""
    if d.n == 0:
        return "no data"
    if d.significant and d.delta_pp > 0:
        return "local better"
    if d.significant and d.delta_pp < 0:
        return "gap remains"
    if -margin_pp <= d.ci_low and d.ci_high <= margin_pp:
        return "matched"
    return "inconclusive (more examples needed)"
