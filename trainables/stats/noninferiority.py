"""The routing rule: when a cheaper model may replace a reference model on a task (shared by the report, `arb plan`
and the race of `arb route`, so every table and decision says the same thing in the same words).

A candidate is routed to only when it is shown *non-inferior*: the lower end of the interval for
(candidate − reference), on the same examples, lies above −margin. "Not significantly worse" is not that: at
n = 50 a model 10 pp worse is rarely significantly worse, so a rule built on it routes more often the less data
there is. Three verdicts, one test:

- `non-inferior`: interval low > −margin (at most `margin_pp` worse, at the stated confidence);
- `worse than margin`: interval high < −margin (more than `margin_pp` worse);
- `undecided`: the interval straddles −margin; more examples would decide.

Error control across the candidates of a task: Bonferroni. With m candidates each interval is a two-sided
1 − α/m interval (each end one-sided α/(2m)), so all m hold at once with probability ≥ 1 − α, and the chance
that a task is routed to a model truly more than `margin_pp` worse is at most α/2 (2.5% at α = 0.05). Bonferroni
rather than Holm because each decision is read off an interval that the tables print: Holm's step-down has no
simultaneous intervals to print beside its decisions, and with m ≤ 5 candidates it gains little.

Which interval: for a fixed set of examples, the report's paired interval for the kind of score
(`trainables.stats.paired.paired_delta`: Tango's score interval for 0/1 scores, the betting interval otherwise);
for a race that looks after every round, the anytime-valid confidence sequence (`trainables.stats.sequential`), since a
fixed-n interval checked after each round would not hold its level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.stats import norm

from trainables.stats.paired import ALPHA, PairedDelta, paired_delta, table_probabilities, tango_z

MARGIN_PP = 5.0
"""Default non-inferiority margin δ (percentage points of the task's metric)."""

NON_INFERIOR = "non-inferior"
WORSE = "worse than margin"
UNDECIDED = "undecided"
ELIMINATED = "eliminated"
"""A race's verdict for a candidate shown no better than −margin + ε (`trainables.stats.race`)."""
Verdict = Literal["non-inferior", "worse than margin", "undecided", "no data", "eliminated"]

Kind = Literal["route", "keep reference", "undecided", "not enough data"]


@dataclass(frozen=True)
class Rule:
    """The non-inferiority rule for one task: margin, overall error rate, and how many candidates share it."""

    margin_pp: float = MARGIN_PP
    alpha: float = ALPHA
    candidates: int = 1

    def __post_init__(self) -> None:
        if not self.margin_pp > 0:
            raise ValueError(f"the non-inferiority margin must be > 0 pp, got {self.margin_pp}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    @property
    def level(self) -> float:
        """Two-sided error rate of each candidate's interval (Bonferroni: α split over the candidates)."""
        return self.alpha / max(1, self.candidates)

    @property
    def confidence(self) -> str:
        """How the tables state the level: `95%` for one candidate, `95% (Bonferroni over 4)` for several."""
        base = f"{100 * (1 - self.alpha):g}%"
        return base if self.candidates <= 1 else f"{base} (Bonferroni over {self.candidates})"

    def compare(self, reference: np.ndarray, candidate: np.ndarray) -> PairedDelta:
        """candidate − reference on the same examples, with the interval at this rule's level."""
        return paired_delta(reference, candidate, alpha=self.level)

    def verdict(self, d: PairedDelta) -> Verdict:
        """Where the interval lies against −margin."""
        if d.n == 0 or math.isnan(d.ci_low):
            return "no data"
        if d.ci_low > -self.margin_pp:
            return "non-inferior"
        if d.ci_high < -self.margin_pp:
            return "worse than margin"
        return "undecided"

    def z(self) -> float:
        """The normal quantile of each one-sided end of the interval."""
        return float(norm.ppf(1 - self.level / 2))

    def examples_to_decide(self, d: PairedDelta, spread: float) -> float:
        """About how many examples in all the comparison needs before its interval clears −margin on one side,
        if the mean difference stays where it is: the interval's own half-width on the side that must move,
        shrinking as 1/√n (so the estimate is the test's own, fixed-n or sequential); from `spread` (the per-example
        differences' standard deviation, in [0, 1] units) when there is no interval yet. An estimate for planning,
        not a promise; inf when the estimate sits on the margin."""
        distance = abs(d.delta_pp + self.margin_pp)
        if distance == 0:
            return math.inf
        side = d.ci_high - d.delta_pp if d.delta_pp < -self.margin_pp else d.delta_pp - d.ci_low
        if d.n > 0 and math.isfinite(side) and side > 0:
            return math.ceil(d.n * (side / distance) ** 2)
        return math.ceil((self.z() * spread / (distance / 100)) ** 2)

    def examples_needed(self, discordance: float, true_gap_pp: float = 0.0, power: float = 0.5) -> float:
        """Examples a fixed design needs so that a candidate whose true gap to the reference is `true_gap_pp` is
        shown non-inferior with probability `power`, for 0/1 scores that disagree on a share `discordance` of the
        examples: the smallest n at which the report's own interval (Tango's, at this rule's level) clears
        −margin that often, computed exactly over the paired 2×2 table's distribution up to `EXACT_N` examples
        (beyond, the normal approximation, which that range shows is close). inf if the gap is not above
        −margin or cannot occur with that little disagreement."""
        distance = (true_gap_pp + self.margin_pp) / 100
        gap = true_gap_pp / 100
        if distance <= 0 or abs(gap) > discordance:
            return math.inf
        spread2 = max(discordance - gap**2, 1e-12)
        z_power = float(norm.ppf(power)) if power != 0.5 else 0.0
        approx = math.ceil((self.z() + z_power) ** 2 * spread2 / distance**2)
        if approx > EXACT_N:
            return approx
        return _exact_n(discordance, gap, self.margin_pp / 100, self.level, power, approx)


EXACT_N = 2500
"""Up to this many examples `Rule.examples_needed` enumerates the 2×2 table exactly (≈ 3M cells)."""


@lru_cache(maxsize=256)
def _exact_n(discordance: float, gap: float, margin: float, level: float, power: float, start: int) -> float:
    """The first n at which `noninferior_power` reaches `power`: the exact power rises with n up to the saw-tooth
    of a discrete test, so a doubling search from the normal approximation `start`, then bisection. Memoized: a
    plan asks the same question for every task of an assumed discordance."""

    def enough(n: int) -> bool:
        return noninferior_power(n, discordance, gap, margin, level) >= power

    high = max(8, start)
    while not enough(high):
        if high > EXACT_N:
            return float(start)
        high *= 2
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


def noninferior_power(n: int, discordance: float, gap: float, margin: float, level: float) -> float:
    """P(the Tango interval at two-sided `level` lies above −margin) on n examples whose 0/1 outcomes disagree on a
    share `discordance`, with true gap `gap` (both in [0, 1] units): a sum over every (up, down) table."""
    ups, downs = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    reject = (ups + downs <= n) & (tango_z(ups, downs, n, -margin) >= float(norm.ppf(1 - level / 2)))
    if not reject.any():
        return 0.0
    return float(table_probabilities(n, discordance, gap)[reject].sum())


def spread_of(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Standard deviation of the per-example differences (0 when there are fewer than two)."""
    diff = np.asarray(candidate, dtype=float) - np.asarray(reference, dtype=float)
    return float(diff.std(ddof=1)) if len(diff) > 1 else 0.0


@dataclass(frozen=True)
class Candidate:
    """A cheaper program that might replace the reference on a task, with its comparison to it."""

    name: str
    usd_per_1k: float
    latency_s_per_1k: float
    delta: PairedDelta
    """candidate − reference, at the rule's level."""
    spread: float = 0.0
    """Standard deviation of the per-example differences (for the examples-to-decide estimate)."""


@dataclass(frozen=True)
class Decision:
    """A task's routing decision and the sentence that states it."""

    kind: Kind
    model: str
    """The model traffic goes to: the routed candidate, else the reference."""
    chosen: Candidate | None
    more_examples: float
    """For an undecided task: about how many more examples per model would decide its likeliest candidate."""
    words: str


def decide(
    rule: Rule, reference: str, candidates: Sequence[Candidate], verdicts: Mapping[str, str] | None = None,
    conf: str | None = None, zone_pp: float = 0.0,
) -> Decision:  # fmt: skip
    """The cheapest candidate shown non-inferior (routed to), else the reference: kept when every candidate is
    shown worse than the margin (or, in a race, eliminated), undecided when some are neither. `verdicts`: a race's
    own verdicts (read off its tests at the margin), else the rule's on each interval; `conf`: how the race states
    its confidence."""
    if not candidates:
        return Decision("not enough data", reference, None, math.nan,
                        f"not enough data: no candidate shares examples with {reference}")  # fmt: skip
    order = sorted(candidates, key=lambda c: (_known(c.usd_per_1k), _known(c.latency_s_per_1k), c.name))
    verdicts = dict(verdicts) if verdicts is not None else {c.name: rule.verdict(c.delta) for c in order}
    conf = conf or rule.confidence
    for i, c in enumerate(order):
        if verdicts[c.name] == NON_INFERIOR:
            cheaper_open = [o.name for o in order[:i] if verdicts[o.name] == UNDECIDED]
            words = (f"route to {c.name}: at {conf} confidence it scores at most {rule.margin_pp:g} pp below "
                     f"{reference} on this task (interval of the gap {c.delta.ci_low:+.1f} to "
                     f"{c.delta.ci_high:+.1f} pp, n = {c.delta.n})")  # fmt: skip
            if cheaper_open:
                words += f"; cheaper {', '.join(cheaper_open)} still undecided"
            return Decision("route", c.name, c, math.nan, words)
    open_ = [c for c in order if verdicts[c.name] == UNDECIDED]
    if not open_:
        if all(v == WORSE for v in verdicts.values()):
            worse = f"more than {rule.margin_pp:g} pp worse"
        else:
            worse = (f"at least {rule.margin_pp - zone_pp:g} pp worse (the margin less its indifference zone of "
                     f"{zone_pp:g} pp)")  # fmt: skip
        return Decision("keep reference", reference, None, math.nan,
                        f"keep {reference}: every cheaper candidate is {worse} at {conf} confidence")  # fmt: skip
    needs = {c.name: rule.examples_to_decide(c.delta, c.spread) - c.delta.n for c in open_}
    name = min(needs, key=lambda k: needs[k])
    more = max(needs[name], 1)
    about = "more examples than any test split holds" if math.isinf(more) else f"about {_round(more):,} more examples"
    return Decision("undecided", reference, None, more,
                    f"undecided at n = {min(c.delta.n for c in open_)}: keep {reference} for now; {about} per model "
                    f"would decide {name}")  # fmt: skip


def _known(value: float) -> float:
    """An unknown cost sorts last: never assume a model is cheap."""
    return math.inf if math.isnan(value) else value


def _round(n: float) -> int:
    """An estimate rounded to two significant figures (it is not more precise than that)."""
    n = math.ceil(n)
    return n if n < 100 else round(n, -(len(str(n)) - 2))
