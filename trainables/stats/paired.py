"""Paired statistics for deltas measured on the same test examples (shared by a trial, which describes its own
result, and the analysis, which compares many).

With n = 50 examples a few points of delta is noise. Every comparison here is paired by example id, and each
comparison's interval, p-value and verdict come from one test, so a row of a table cannot contradict itself:

- a fixed number of examples (`stopping: fixed`): the paired sign-flip randomization test of the mean per-example
  difference (Fisher's; for 0/1 scores it is McNemar's exact test), and the interval is the set of mean shifts
  that the same test does not reject (test inversion). Before, the interval was a bootstrap and the p-value a sign
  test, and on the smoke's n = 8 they disagreed: CI [2.5, 62.5] with p = 0.25.
- a trial that stopped early (`stopping: sequential`): the anytime-valid confidence sequence of
  `trainables.stats.sequential`, whose interval and p-value stay valid at whatever example it stopped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom

ALPHA = 0.05
N_FLIPS = 4000
"""Random sign vectors of the randomization test above `EXACT_MAX_N` examples (the p-value's Monte Carlo error is
at most about 0.007 at p = 0.05)."""
EXACT_MAX_N = 12
"""Up to this many examples the test enumerates all 2^n sign vectors (exact)."""
SIGN_FLIP = "sign-flip test"
CONFIDENCE_SEQUENCE = "confidence sequence"


@dataclass(frozen=True)
class PairedDelta:
    """b − a in percentage points, with the 95% interval, p-value and verdict of one test (`test`)."""

    n: int
    delta_pp: float
    ci_low: float
    ci_high: float
    p_value: float
    up: int
    """Examples where b scored higher than a."""
    down: int
    test: str = SIGN_FLIP

    @property
    def significant(self) -> bool:
        """The test rejects "no difference" at `ALPHA`; the interval then excludes 0 (by construction)."""
        return self.p_value <= ALPHA


def paired_delta(a: np.ndarray, b: np.ndarray, *, seed: int = 0, alpha: float = ALPHA) -> PairedDelta:
    """Compare per-example scores `b` against `a` (same examples, same order, scores in [0, 1]) with the paired
    sign-flip test: under "no difference", each example's difference is as likely to have either sign.

    The interval holds every shift δ whose test on (b − a − δ) is not rejected at `alpha` (a 1 − `alpha`
    interval), searched by bisection from the observed mean outwards; it excludes 0 exactly when p ≤ `alpha`.
    A smaller `alpha` is how a decision over several candidates splits its error rate
    (`trainables.stats.noninferiority`).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return PairedDelta(0, float("nan"), float("nan"), float("nan"), 1.0, 0, 0)
    diff = np.sort(b - a)  # the test does not depend on the order of the examples; sorted, equal inputs share work
    mean, low, high, p = _sign_flip(diff.tobytes(), seed, alpha)
    up, down = int((diff > 0).sum()), int((diff < 0).sum())
    return PairedDelta(n, 100 * mean, 100 * low, 100 * high, p, up, down)


@lru_cache(maxsize=4096)
def _sign_flip(sorted_diff: bytes, seed: int, alpha: float = ALPHA) -> tuple[float, float, float, float]:
    """(mean, interval low, interval high, p-value) of the sign-flip test on these differences, in [−1, 1] units;
    memoized: with 0/1 scores most comparisons of a report have the same few hundred up/down/tie counts."""
    diff = np.frombuffer(sorted_diff)
    signs = _signs(len(diff), seed)

    def p_at(shift: float) -> float:
        return _sign_flip_p(diff - shift, signs)

    mean = float(diff.mean())
    p = p_at(0.0)
    low = _bound(p_at, mean, 0.0 if (mean > 0 and p <= alpha) else -1.0, alpha)
    high = _bound(p_at, mean, 0.0 if (mean < 0 and p <= alpha) else 1.0, alpha)
    if p > alpha:  # 0 is not rejected, so it belongs to the interval even where acceptance is not one stretch
        low, high = min(low, 0.0), max(high, 0.0)
    return mean, low, high, p


def _sign_flip_p(x: np.ndarray, signs: np.ndarray | None) -> float:
    """Two-sided p-value of |Σx| under random signs on each x_i."""
    scale = max(1.0, float(np.abs(x).sum()))
    observed = abs(float(x.sum())) - 1e-9 * scale  # equal sums count as "as extreme", whatever the rounding
    size = np.abs(x)
    moving = size[size > 1e-12]
    if len(moving) == 0:
        return 1.0
    if np.allclose(moving, moving[0]):
        # all differences of one size (0/1 scores at shift 0): |Σ| = size·|2·Binomial(k, ½) − k|, exactly
        k, need = len(moving), observed / moving[0]
        lo = int(np.floor((k - need) / 2 + 1e-9))  # up-counts j with |2j − k| ≥ need: j ≤ lo or j ≥ k − lo
        return 1.0 if lo >= k / 2 else min(1.0, 2.0 * float(binom.cdf(lo, k, 0.5)))
    assert signs is not None
    extreme = int((np.abs(signs @ x) >= observed).sum())
    if len(signs) == 2 ** len(x):  # every sign vector: exact
        return extreme / len(signs)
    return (extreme + 1) / (len(signs) + 1)  # a random sample of them (Phipson & Smyth 2010: never 0)


def _bound(p_at: Callable[[float], float], inside: float, limit: float, alpha: float, tol: float = 5e-4) -> float:
    """The end of the accepted shifts between `inside` (accepted: the observed mean has p = 1) and `limit`."""
    if p_at(limit) > alpha:
        return limit
    good, bad = inside, limit
    while abs(bad - good) > tol:
        mid = (good + bad) / 2
        if p_at(mid) > alpha:
            good = mid
        else:
            bad = mid
    return good


@lru_cache(maxsize=64)
def _signs(n: int, seed: int) -> np.ndarray:
    """Sign vectors for n examples, drawn once per (n, seed) and shared by every comparison of that size: all 2^n
    up to `EXACT_MAX_N`, else `N_FLIPS` random ones. Sharing is what makes a report on thousands of runs fast, and
    it keeps each comparison reproducible."""
    if n <= EXACT_MAX_N:
        out = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))
    else:
        out = np.random.default_rng(seed).choice((-1.0, 1.0), size=(N_FLIPS, n))
    out.setflags(write=False)
    return out


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


POWER = 0.8
PRIOR_RATE, PRIOR_RHO = 0.5, 0.5
"""Before any run of a task: 0/1 scores at 50% (the largest variance a [0, 1] score can have) in both conditions,
correlated 0.5 across conditions (the same model on the same examples; a stated assumption, replaced by the
measured discordance once runs of the task exist)."""


def prior_discordance(rate: float = PRIOR_RATE, rho: float = PRIOR_RHO) -> float:
    """Share of examples where two 0/1 conditions with this success rate and correlation disagree:
    2·p(1 − p)(1 − ρ) (0.25 at the prior)."""
    return 2 * rate * (1 - rate) * (1 - rho)


def discordant_outcomes(discordance: float, effect: float) -> tuple[float, float]:
    """(P(up), P(down)) of one example's difference for a mean difference `effect` (in [0, 1]) and a discordance
    `discordance` under no effect; an effect larger than the discordance makes more examples disagree."""
    down = max(0.0, (discordance - effect) / 2)
    return down + effect, down


def detectable_effect_pp(n: int, discordance: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean paired difference (pp, on a 1-pp grid) that the report's fixed-n test (McNemar's exact
    test, which is the sign-flip test on 0/1 scores) detects with probability `power` on n examples, computed
    exactly: the number of disagreeing examples is binomial, and so are the ups among them. NaN if none is."""
    if n <= 0:
        return float("nan")
    ks = np.arange(n + 1)
    # largest j with 2·P(Bin(k, ½) ≤ j) ≤ alpha: the test rejects when min(up, down) ≤ that (−1: never)
    cut = np.array([_rejection_cut(int(k), alpha) for k in ks])
    for effect_pp in range(1, 101):
        up, down = discordant_outcomes(discordance, effect_pp / 100)
        if up + down > 1:
            break
        share_up = up / (up + down)
        reject = np.where(cut >= 0, binom.cdf(cut, ks, share_up) + binom.sf(ks - cut - 1, ks, share_up), 0.0)
        if float((binom.pmf(ks, n, up + down) * np.minimum(reject, 1.0)).sum()) >= power:
            return float(effect_pp)
    return float("nan")


@lru_cache(maxsize=4096)
def _rejection_cut(k: int, alpha: float) -> int:
    j = -1
    while j + 1 < k / 2 and 2 * float(binom.cdf(j + 1, k, 0.5)) <= alpha:
        j += 1
    return j
