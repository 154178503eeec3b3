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

Which interval: for a fixed set of examples, the paired sign-flip test inverted
(`trainables.stats.paired.paired_delta`);
for a race that looks after every round, the anytime-valid confidence sequence (`trainables.stats.sequential`), since a
fixed-n interval checked after each round would not hold its level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm

from trainables.stats.paired import ALPHA, PairedDelta, paired_delta

MARGIN_PP = 5.0
"""Default non-inferiority margin δ (percentage points of the task's metric)."""

NON_INFERIOR = "non-inferior"
WORSE = "worse than margin"
UNDECIDED = "undecided"
Verdict = Literal["non-inferior", "worse than margin", "undecided", "no data"]

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
        examples (normal approximation; 0.5 = an even chance). inf if the gap is not above −margin."""
        distance = (true_gap_pp + self.margin_pp) / 100
        if distance <= 0:
            return math.inf
        spread2 = max(discordance - (true_gap_pp / 100) ** 2, 1e-12)
        z_power = float(norm.ppf(power)) if power != 0.5 else 0.0
        return math.ceil((self.z() + z_power) ** 2 * spread2 / distance**2)


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


def decide(rule: Rule, reference: str, candidates: Sequence[Candidate]) -> Decision:
    """The cheapest candidate shown non-inferior (routed to), else the reference: kept when every candidate is
    shown worse than the margin, undecided when some are neither."""
    if not candidates:
        return Decision("not enough data", reference, None, math.nan,
                        f"not enough data: no candidate shares examples with {reference}")  # fmt: skip
    order = sorted(candidates, key=lambda c: (_known(c.usd_per_1k), _known(c.latency_s_per_1k), c.name))
    verdicts = {c.name: rule.verdict(c.delta) for c in order}
    conf = rule.confidence
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
        return Decision("keep reference", reference, None, math.nan,
                        f"keep {reference}: every cheaper candidate is more than {rule.margin_pp:g} pp worse at "
                        f"{conf} confidence")  # fmt: skip
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
