"""Paired statistics for deltas measured on the same test examples (shared by a trial, which describes its own
result, and the analysis, which compares many).

With n = 50 examples a few points of delta is noise. Every comparison here is paired by example id, and each
comparison's interval, p-value and verdict come from one procedure, so a row of a table cannot contradict itself.
Which procedure depends on the kind of score (`test` names it in every row):

- **0/1 scores** (accuracy, exact match, pass@1): Tango's score interval for a difference of paired proportions
  (Tango 1998, Statistics in Medicine 17:891–908; the interval `PropCIs::scoreci.mp` and
  `contingencytables::Tango_asymptotic_score_CI_paired_2x2` compute in R; no Python package has it: statsmodels
  0.15's `confint_proportions_paired` offers Newcombe's and Wald's only), with the continuity correction that
  McNemar's test carries (Edwards 1948: |up − down| − 1, half the step of up − down at a fixed number of
  disagreements). The score test's variance comes from the restricted maximum likelihood of the disagreement
  rate under each candidate difference, so it stays valid when the two columns rarely disagree: two models that
  never disagree on 50 examples get about ±9 pp, not [0, 0] (without the correction, ±7.1). Uncorrected, the
  interval's one-sided error at the margin reached 3.0% for a nominal 2.5% (n = 20, half the examples disagreeing;
  exact trinomial enumeration, `benchmarks/coverage.py`); corrected, every cell of that benchmark is at or below
  nominal. The p-value is the same score test at 0 (McNemar's corrected test), so p ≤ α exactly when the interval
  excludes 0.
- **bounded continuous scores** (F1, token F1, faithfulness in [0, 1]): the fixed-n betting interval of
  Waudby-Smith & Ramdas (2024, Section 4; `trainables.stats.betting`), valid at every n for any distribution in
  [0, 1] (Markov's inequality on an e-value, no asymptotics). Its capital is averaged over `PERMUTATIONS` seeded
  orders of the examples: the average of e-values is an e-value, and it makes the interval depend on the scores,
  not on the order they were evaluated in. The p-value is 1 / that capital at 0.
- a trial that stopped early (`stopping: sequential`): the anytime-valid confidence sequence of
  `trainables.stats.sequential`, whose interval and p-value stay valid at whatever example it stopped.

Before, every comparison inverted the paired sign-flip test under a location shift. For 0/1 scores most
differences are ties; shifted by any μ ≠ 0 every tie moves off zero, the test then checks symmetry rather than
the mean, and the interval's end stuck at 0: identical columns gave [0, 0], and a model that never disagreed with
the reference was routed to on no evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln, logsumexp, xlogy
from scipy.stats import binom, norm

from trainables.stats import betting

ALPHA = 0.05
TANGO = "Tango score interval"
BETTING = "betting interval"
CONFIDENCE_SEQUENCE = "confidence sequence"
CONTINUITY = 1.0
"""McNemar's (Edwards') continuity correction on up − down."""
PERMUTATIONS = 16
"""Seeded orders whose betting capital is averaged (the interval's dependence on the order falls as 1/√that)."""
_COARSE = np.linspace(0.0, 1.0, 401)[1:-1]
"""Candidate means of x = (d + 1) / 2 for the betting interval's first pass: a step of 0.5 pp in d."""
_COARSE_STEP = float(_COARSE[1] - _COARSE[0])
_STEP = 0.0005
"""The final resolution of the betting interval's ends, in d units (0.05 pp)."""


@dataclass(frozen=True)
class PairedDelta:
    """b − a in percentage points, with the 95% interval, p-value and verdict of one procedure (`test`)."""

    n: int
    delta_pp: float
    ci_low: float
    ci_high: float
    p_value: float
    up: int
    """Examples where b scored higher than a."""
    down: int
    test: str = TANGO

    @property
    def significant(self) -> bool:
        """The test rejects "no difference" at `ALPHA`; the interval then excludes 0 (by construction)."""
        return self.p_value <= ALPHA


def is_binary(*columns: np.ndarray) -> bool:
    """Whether every score is 0 or 1 (then the paired 2×2 table is all there is to know)."""
    return all(bool(np.isin(np.asarray(c, dtype=float), (0.0, 1.0)).all()) for c in columns)


def paired_delta(a: np.ndarray, b: np.ndarray, *, seed: int = 0, alpha: float = ALPHA) -> PairedDelta:
    """Compare per-example scores `b` against `a` (same examples, same order, scores in [0, 1]): Tango's score
    interval for 0/1 scores, the betting interval otherwise (module docstring), at level 1 − `alpha`.

    A smaller `alpha` is how a decision over several candidates splits its error rate
    (`trainables.stats.noninferiority`). `seed` picks the betting interval's orders.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return PairedDelta(0, float("nan"), float("nan"), float("nan"), 1.0, 0, 0)
    diff = b - a
    up, down = int((diff > 0).sum()), int((diff < 0).sum())
    if is_binary(a, b):
        low, high, p = tango(up, down, n, alpha)
        return PairedDelta(n, 100 * (up - down) / n, 100 * low, 100 * high, p, up, down, TANGO)
    mean, low, high, p = _betting(np.sort(diff).tobytes(), seed, alpha)
    return PairedDelta(n, 100 * mean, 100 * low, 100 * high, p, up, down, BETTING)


def tango_z(up: np.ndarray | int, down: np.ndarray | int, n: int, d0: float, cc: float = CONTINUITY) -> np.ndarray:
    """Tango's score statistic for "the mean paired difference is `d0`" (in [−1, 1] units) given `up` examples
    where the second scored higher and `down` where it scored lower, out of `n`; with `cc` taken off |numerator|.
    Vectorized over up/down (the coverage benchmark evaluates every table at once).

    Under the restriction, the rate of "down" examples has the closed-form maximum-likelihood estimate
    q = (√(B² − 4AC) − B) / 2A with A = 2n, B = −up − down + (2n − up + down)·d0, C = −down·d0·(1 − d0), and the
    statistic is (up − down − n·d0) / √(n (2q + d0 (1 − d0))) (Tango 1998, eq. 3–5)."""
    b, c = np.asarray(up, dtype=float), np.asarray(down, dtype=float)
    big_a = 2.0 * n
    big_b = -b - c + (2.0 * n - b + c) * d0
    big_c = -c * d0 * (1 - d0)
    q = (np.sqrt(np.maximum(big_b**2 - 4 * big_a * big_c, 0.0)) - big_b) / (2 * big_a)
    var = n * (2 * q + d0 * (1 - d0))
    raw = b - c - n * d0
    num = np.sign(raw) * np.maximum(np.abs(raw) - cc, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.maximum(var, 1e-300)), np.sign(num) * np.inf)
    out: np.ndarray = np.where(num == 0, 0.0, z)
    return out


def table_probabilities(n: int, discordance: float, gap: float) -> np.ndarray:
    """P(up = i, down = j) for every paired 2×2 table of n examples (rows i, columns j; 0 where i + j > n), when
    a share `discordance` of examples disagree and the mean difference is `gap` (both in [0, 1] units): the
    trinomial that exact power and coverage sum over."""
    ups, downs = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    ties = n - ups - downs
    ok = ties >= 0
    ties = np.where(ok, ties, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = gammaln(n + 1) - gammaln(ups + 1) - gammaln(downs + 1) - gammaln(ties + 1)
        log_p += xlogy(ups, (discordance + gap) / 2) + xlogy(downs, (discordance - gap) / 2)
        log_p += xlogy(ties, 1 - discordance)
    out: np.ndarray = np.where(ok, np.exp(log_p), 0.0)
    return out


@lru_cache(maxsize=8192)
def tango(up: int, down: int, n: int, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(low, high, two-sided p-value at 0) of the corrected Tango interval, in [−1, 1] units: the differences d0
    whose score test is not rejected at `alpha`, found by root finding on each side of the estimate (the
    statistic decreases in d0). Memoized: a report's comparisons share a few hundred (up, down, n)."""
    z = float(norm.ppf(1 - alpha / 2))
    estimate = (up - down) / n

    def excess(d0: float, side: float) -> float:
        return float(tango_z(up, down, n, d0)) - side * z

    edge = 1 - 1e-12
    low = -1.0 if excess(-edge, 1.0) < 0 else brentq(excess, -edge, estimate, args=(1.0,), xtol=1e-10)
    high = 1.0 if excess(edge, -1.0) > 0 else brentq(excess, estimate, edge, args=(-1.0,), xtol=1e-10)
    z0 = abs(float(tango_z(up, down, n, 0.0)))
    p = 1.0 if up + down == 0 else min(1.0, 2 * float(norm.sf(z0)))
    return float(low), float(high), p


@lru_cache(maxsize=4096)
def _betting(sorted_diff: bytes, seed: int, alpha: float = ALPHA) -> tuple[float, float, float, float]:
    """(mean, low, high, p-value) of the fixed-n betting interval on these differences, in [−1, 1] units: the
    hedged capital with plug-in bets sized for n, averaged over `PERMUTATIONS` seeded orders, at candidate means;
    a mean is rejected when that average reaches 1/α. Candidates: a coarse grid (0.5 pp), then a fine one (0.05 pp)
    around each end found on it, which costs a tenth of the fine grid everywhere. The reported ends are the
    outermost candidates not rejected, moved one fine step outwards (the boundary lies between two candidates),
    never across a rejected 0."""
    d = np.frombuffer(sorted_diff)
    x = betting.as_x(d)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(x) for _ in range(PERMUTATIONS)]

    def log_capital(m: np.ndarray) -> np.ndarray:
        logs = []
        for xs in orders:
            bets = betting.plugin_bets(xs, alpha, horizon=len(xs))[:, None]
            up = betting.log_wealth_up(xs[:, None], bets, m[None, :])[-1]
            down = betting.log_wealth_down(xs[:, None], bets, m[None, :])[-1]
            logs.append(betting.hedged(up, down))
        out: np.ndarray = logsumexp(np.array(logs), axis=0) - math.log(PERMUTATIONS)
        return out

    threshold = math.log(1 / alpha)
    mean = float(d.mean())
    p = min(1.0, math.exp(-float(log_capital(np.array([0.5]))[0])))
    coarse = _COARSE[log_capital(_COARSE) < threshold]
    if len(coarse) == 0:  # every candidate rejected: an event of probability ≤ α; report the estimate alone
        return mean, mean, mean, p
    fine_step = _STEP / 2  # in x units
    ends = []
    for end, side in ((coarse[0], -1), (coarse[-1], 1)):
        span = np.arange(-_COARSE_STEP, _COARSE_STEP + fine_step / 2, fine_step) + end
        span = span[(span > 0) & (span < 1)]
        inside = span[log_capital(span) < threshold]
        best = (inside.min() if side < 0 else inside.max()) if len(inside) else end
        ends.append(2 * best - 1 + side * _STEP)
    low, high = ends
    if p <= alpha and low > -_STEP:  # 0 rejected, the interval above it
        low = max(low, _STEP / 2)
    elif p <= alpha and high < _STEP:
        high = min(high, -_STEP / 2)
    return mean, float(max(low, -1.0)), float(min(high, 1.0)), p


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
    """The smallest mean paired difference (pp, on a 1-pp grid) that the report's fixed-n test of 0/1 scores
    detects with probability `power` on n examples, computed exactly: at d0 = 0 Tango's corrected statistic is
    McNemar's corrected test, (|up − down| − 1) / √(up + down), so with k disagreeing examples (binomial) it
    rejects when the ups among them (binomial given k) lie at most `_cut(k)` from either end. NaN if none is."""
    if n <= 0:
        return float("nan")
    ks = np.arange(n + 1)
    cut = _cuts(n, alpha)
    for effect_pp in range(1, 101):
        up, down = discordant_outcomes(discordance, effect_pp / 100)
        if up + down > 1:
            break
        share_up = up / (up + down)
        reject = np.where(cut >= 0, binom.cdf(cut, ks, share_up) + binom.sf(ks - cut - 1, ks, share_up), 0.0)
        if float((binom.pmf(ks, n, up + down) * np.minimum(reject, 1.0)).sum()) >= power:
            return float(effect_pp)
    return float("nan")


@lru_cache(maxsize=256)
def _cuts(n: int, alpha: float) -> np.ndarray:
    """Per number of disagreements k = 0 … n: the largest count of ups j with |2j − k| − 1 ≥ z·√k (the corrected
    test rejects for j ≤ cut or j ≥ k − cut), −1 where no count rejects."""
    z = float(norm.ppf(1 - alpha / 2))
    ks = np.arange(n + 1)
    cut = np.floor((ks - 1 - z * np.sqrt(ks)) / 2 + 1e-9).astype(int)
    cut = np.where(cut >= ks / 2, -1, np.maximum(cut, -1))
    cut.setflags(write=False)
    return cut
