"""The routing race: add test examples to a task's comparison only while its routing decision is still open.

A task's race compares a reference program with cheaper candidate programs on the task's test examples in their
seeded order (the trials' own examples first: they count). Each round scores the next `batch` examples on every
candidate still racing (the reference's outcomes are shared: scored once per example). After each round each
candidate's two one-sided tests, read at the points they are about, say where it stands:

- **non-inferior**: the betting capital against "candidate − reference ≤ −δ" has reached 2k/α at every candidate
  gap up to and including −δ itself (k: the race's starting candidates, Bonferroni), so the chance that a task is
  routed to a model truly more than δ worse is at most α/2, however often the race looks;
- **eliminated**: the capital against "the gap ≥ −δ + ε" has reached 1/α (one-sided α, no Bonferroni split: a
  wrong elimination can only cost savings or the cheapest pick, never route wrongly), so the candidate is no
  better than −δ + ε, inside the indifference zone ε or worse: it cannot be the pick an ε-PAC race must make.
  Without ε a candidate truly just beyond the margin would race to n_max (extraction's took a third of the
  simulated calls);
- undecided otherwise.

The routing side's error rate is split (`FINAL_SHARE`) between the sequence, read after every round, and one
fixed-n look with the report's own interval when a candidate reaches the race's cap; a race that ends earlier never
makes that look.

The points −δ and −δ + ε are on the grid of candidate gaps, so "the margin is rejected" is read off the capital at
the margin itself (an earlier version inverted a two-sided sequence on a grid and read 2·0.475 − 1 as above −0.05:
an effective margin of 5.1 pp). A candidate dearer than one shown non-inferior leaves too (it cannot be the pick).
The task is decided when its cheapest non-inferior candidate has no cheaper one still open (route to it), or when
no candidate is open and none is non-inferior (keep the reference); otherwise it stops at `n_max` and says what it
knows.

Correctness is ε-PAC: never route to a model truly more than δ worse, and never pick one dearer than the cheapest
candidate truly above −δ + ε (`benchmarks/routing_sim.py` measures both).

This is paired successive elimination (shared examples, paired differences, eliminate what is decided; e.g.
Even-Dar, Mannor & Mansour 2006 for elimination, and Waudby-Smith & Ramdas 2024 for the tests) with the stopping
rule replaced by the non-inferiority question and tests that stay valid at any stop. Scores are each example's own
(for extraction: that sentence's F1, not the corpus micro F1 the trial reports), and every row says so.
The functions here are pure: `grid.route` feeds them outcomes and records what they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from trainables.stats import betting
from trainables.stats.noninferiority import (
    ELIMINATED,
    MARGIN_PP,
    NON_INFERIOR,
    UNDECIDED,
    WORSE,
    Candidate,
    Decision,
    Rule,
    decide,
    spread_of,
)
from trainables.stats.paired import ALPHA, CONFIDENCE_SEQUENCE, PairedDelta, paired_delta

N_MAX = 500
"""A race's cap when none is given (`arb route` gives the test split's size unless `--n-max` says otherwise)."""
BATCH = 25
"""Default examples per round."""
ZONE_PP = 2.0
"""Default indifference zone ε (pp): a candidate no better than −δ + ε leaves the race."""
FINAL_SHARE = 0.5
"""Of each error rate, the share spent on the report's fixed-n interval at the race's cap, the rest on the
sequence (a union bound: valid together). The cap is known before the race starts (the split's size or
`--n-max`), so that look is one pre-planned test; on a small split (HumanEval's 164, StrategyQA's 687) it decides
what an anytime-valid sequence, which pays for looking at every round, cannot yet."""


@dataclass(frozen=True)
class RaceRule:
    """How a task's race runs: the routing rule's margin and error rate, the indifference zone, the round size and
    the cap."""

    margin_pp: float = MARGIN_PP
    alpha: float = ALPHA
    batch: int = BATCH
    n_max: int = N_MAX
    zone_pp: float = ZONE_PP
    final_share: float = FINAL_SHARE
    """Share of each error rate kept for one fixed-n look when a candidate reaches the cap (0: none)."""

    def __post_init__(self) -> None:
        if self.batch < 1 or self.n_max < 1:
            raise ValueError(f"a race needs batch ≥ 1 and n_max ≥ 1, got {self.batch} and {self.n_max}")
        if not 0 <= self.zone_pp < self.margin_pp:
            raise ValueError(f"the indifference zone must be in [0, margin) = [0, {self.margin_pp:g}) pp, "
                             f"got {self.zone_pp:g}")  # fmt: skip

    def rule(self, candidates: int) -> Rule:
        return Rule(self.margin_pp, self.alpha, candidates)

    def confidence(self, candidates: int) -> str:
        """How a race states its level: the routing side's, with Bonferroni over the starting candidates."""
        return self.rule(candidates).confidence + " (anytime-valid)"


class MarginTests:
    """One candidate's two one-sided betting tests over a race, carried from round to round.

    Candidate gaps g (in [−1, 1] units) form a grid that holds −δ and −δ + ε exactly. Against each g the
    "above" capital bets that the mean difference exceeds g (aGRAPA bets, `trainables.stats.betting`) and the
    "below" capital that it falls short of it. A g is out from below once its "above" capital has reached
    1/`low_level` (valid for every mean ≤ g at any stopping time), out from above once its "below" capital has
    reached 1/`high_level`. The lower end is the largest g with every grid point up to it out from below; the
    upper end the smallest g with every grid point from it out from above; so the margin is rejected exactly when
    the printed lower end is at or above −δ."""

    def __init__(self, margin: float, zone: float, low_level: float, high_level: float):
        grid = np.linspace(-1.0, 1.0, 2001)[1:-1]
        for point in (round(-margin, 12), round(-margin + zone, 12)):  # snapped onto the grid, not beside it
            near = int(np.argmin(np.abs(grid - point)))
            grid = np.insert(grid, np.searchsorted(grid, point), point) if abs(grid[near] - point) > 1e-9 else grid
            grid[np.argmin(np.abs(grid - point))] = point
        self.gaps = grid
        self._m = (grid + 1) / 2
        self._low_log = math.log(1 / low_level)
        self._high_log = math.log(1 / high_level)
        self._up = np.zeros(len(grid))
        self._down = np.zeros(len(grid))
        self._out_low = np.zeros(len(grid), dtype=bool)
        self._out_high = np.zeros(len(grid), dtype=bool)
        self.n = 0

    def extend(self, diffs: np.ndarray) -> None:
        """Take in every difference so far (the first `n` were seen before); only the new ones are scored."""
        x = betting.as_x(diffs)
        if len(x) < self.n:
            raise ValueError(f"the race had {self.n} differences; it cannot shrink to {len(x)}")
        new = x[self.n :]
        if len(new) == 0:
            return
        bet_up, bet_down = betting.grapa_bets(x, self._m, self.n)
        up = self._up + betting.log_wealth_up(new[:, None], bet_up, self._m)
        down = self._down + betting.log_wealth_down(new[:, None], bet_down, self._m)
        self._out_low |= (up >= self._low_log).any(axis=0)
        self._out_high |= (down >= self._high_log).any(axis=0)
        self._up, self._down = up[-1], down[-1]
        self.n = len(x)

    @property
    def low(self) -> float:
        """The lower end (in [−1, 1] units): −1 until the lowest grid point is out."""
        inside = np.flatnonzero(~self._out_low)
        if len(inside) == 0:
            return float(self.gaps[-1])
        return -1.0 if inside[0] == 0 else float(self.gaps[inside[0] - 1])

    @property
    def high(self) -> float:
        inside = np.flatnonzero(~self._out_high)
        if len(inside) == 0:
            return float(self.gaps[0])
        return 1.0 if inside[-1] == len(self.gaps) - 1 else float(self.gaps[inside[-1] + 1])


@dataclass(frozen=True)
class Entrant:
    """A candidate program: its name (the model, or model and optimizer), and its price per 1,000 calls."""

    name: str
    usd_per_1k: float
    latency_s_per_1k: float = 0.0


@dataclass(frozen=True)
class Standing:
    """A candidate after a round: examples it has scored beside the reference, its gap to the reference with the
    race's interval (pp; lower end at the routing level, one-sided α/(2k); upper end at the elimination level,
    one-sided α), and the verdict."""

    name: str
    n: int
    delta_pp: float
    ci_low: float
    ci_high: float
    verdict: str


@dataclass
class RaceState:
    """What a task's race knows after a round: the standings, who still races, and the decision once made."""

    standings: dict[str, Standing]
    racing: list[str]
    decision: Decision | None = None
    """Set when the race is over (decided, or at n_max)."""
    n_reference: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    """Examples scored per program, the reference included (= its LM-call units)."""


@dataclass(frozen=True)
class Round:
    """What a round scores: positions in the seeded order for the reference and for each racing candidate."""

    reference: range
    candidates: dict[str, range]


class Race:
    """One task's race: the reference, the candidates and each candidate's tests (carried across rounds, so a
    look costs only the new examples). Its verdicts are a function of the outcomes alone: a resumed race rebuilds
    the same state from the stored outcomes."""

    def __init__(self, rule: RaceRule, reference: str, entrants: Sequence[Entrant], n_max: int | None = None):
        if not entrants:
            raise ValueError("a race needs at least one candidate")
        self.rule, self.reference, self.entrants = rule, reference, list(entrants)
        self.cap = rule.n_max if n_max is None else min(n_max, rule.n_max)
        self.decision_rule = rule.rule(len(entrants))
        # the routing side one-sided α/(2k), split between the sequence and the look at the cap; the elimination
        # side one-sided α, all of it the sequence's (at the cap the race ends whatever that side says)
        self._low_level = self.decision_rule.level / 2
        seq = 1 - rule.final_share
        self._tests = {e.name: MarginTests(rule.margin_pp / 100, rule.zone_pp / 100, seq * self._low_level,
                                           rule.alpha) for e in entrants}  # fmt: skip

    def verdict(self, low_pp: float, high_pp: float) -> str:
        """Non-inferior when the lower end is at or above −δ (the margin itself rejected), eliminated when the
        upper end is at or below −δ + ε (worse than the margin when ε = 0)."""
        if low_pp >= -self.rule.margin_pp - 1e-9:
            return NON_INFERIOR
        if high_pp <= -self.rule.margin_pp + self.rule.zone_pp + 1e-9:
            return ELIMINATED if self.rule.zone_pp > 0 else WORSE
        return UNDECIDED

    def standings(self, reference: np.ndarray, outcomes: Mapping[str, np.ndarray]) -> dict[str, Standing]:
        """Each candidate's tests over the examples it shares with the reference (a prefix of the seeded
        order)."""
        out = {}
        for e in self.entrants:
            cand = np.asarray(outcomes.get(e.name, np.array([])), dtype=float)
            n = min(len(cand), len(reference))
            if n == 0:
                out[e.name] = Standing(e.name, 0, math.nan, -100.0, 100.0, UNDECIDED)
                continue
            diffs = cand[:n] - np.asarray(reference[:n], dtype=float)
            tests = self._tests[e.name]
            tests.extend(diffs)
            low, high = 100 * tests.low, 100 * tests.high
            if n >= self.cap and self.rule.final_share > 0:  # the pre-planned look at the cap
                ref_n = np.asarray(reference[:n], dtype=float)
                share = self.rule.final_share
                low = max(low, paired_delta(ref_n, cand[:n], alpha=2 * share * self._low_level).ci_low)
            out[e.name] = Standing(e.name, n, 100 * float(diffs.mean()), low, high, self.verdict(low, high))
        return out

    def judge(self, reference: np.ndarray, outcomes: Mapping[str, np.ndarray]) -> RaceState:
        """Read the race after a round: who is still open, and the decision if the race is over."""
        table = self.standings(reference, outcomes)
        order = sorted(self.entrants, key=lambda e: (e.usd_per_1k, e.latency_s_per_1k, e.name))
        first_good = next((i for i, e in enumerate(order) if table[e.name].verdict == NON_INFERIOR), len(order))
        racing = [e.name for e in order[:first_good]
                  if table[e.name].verdict == UNDECIDED and table[e.name].n < self.cap]  # fmt: skip
        calls = {self.reference: len(reference), **{e.name: len(outcomes.get(e.name, ())) for e in self.entrants}}
        state = RaceState(table, racing, None, len(reference), calls)
        if not racing:
            cands = [_candidate(e, table[e.name], reference, outcomes) for e in order]
            verdicts = {e.name: table[e.name].verdict for e in order}
            state.decision = decide(self.decision_rule, self.reference, cands, verdicts,
                                    self.rule.confidence(len(self.entrants)), self.rule.zone_pp)  # fmt: skip
        return state

    def next_round(self, state: RaceState) -> Round:
        """The next round: every candidate still racing up to the next multiple of `batch` beyond the examples it
        shares with the reference, from where its own outcomes end (a trial may have scored more examples than
        the reference's: those are not scored again), and the reference up to the furthest of them (its outcomes
        are shared, so each example costs it one call however many candidates race)."""
        want, far = {}, 0
        for name in state.racing:
            target = min(self.cap, _next_look(state.standings[name].n, self.rule.batch))
            own = state.calls.get(name, state.standings[name].n)
            want[name] = range(own, max(own, target))
            far = max(far, target)
        return Round(range(state.n_reference, max(far, state.n_reference)), want)


def _candidate(e: Entrant, s: Standing, reference: np.ndarray, outcomes: Mapping[str, np.ndarray]) -> Candidate:
    """A standing as the routing rule's `Candidate` (the race's interval; the spread for the estimate of
    examples still needed)."""
    cand = np.asarray(outcomes.get(e.name, np.array([])), dtype=float)
    n = min(len(cand), len(reference))
    d = PairedDelta(n, s.delta_pp, s.ci_low, s.ci_high, math.nan, 0, 0, test=CONFIDENCE_SEQUENCE)
    return Candidate(e.name, e.usd_per_1k, e.latency_s_per_1k, d, spread_of(reference[:n], cand[:n]))


def _next_look(have: int, batch: int) -> int:
    """The next multiple of `batch` above `have`: rounds align across candidates that joined with different
    counts (the trials' n_eval need not be a multiple of the batch)."""
    return (have // batch + 1) * batch


def simulate(
    rule: RaceRule, entrants: Sequence[Entrant], reference: np.ndarray, outcomes: Mapping[str, np.ndarray],
    start: int, reference_name: str = "reference",
) -> RaceState:  # fmt: skip
    """Run a whole race on precomputed outcomes (every program's score on every example of the seeded order),
    starting from `start` examples already scored by the trials: what `arb route` would do, without LMs. For the
    benchmark and the tests."""
    race = Race(rule, reference_name, entrants, len(reference))
    seen = {e.name: np.asarray(outcomes[e.name][:start], dtype=float) for e in entrants}
    ref = np.asarray(reference[:start], dtype=float)
    for _ in range(race.cap // rule.batch + 2):  # every round adds ≥ 1 example to someone, and no one exceeds cap
        state = race.judge(ref, seen)
        if state.decision is not None:
            return state
        step = race.next_round(state)
        ref = np.asarray(reference[: step.reference.stop], dtype=float)
        for name, where in step.candidates.items():
            seen[name] = np.asarray(outcomes[name][: where.stop], dtype=float)
    raise AssertionError("a race must end within n_max / batch rounds")  # pragma: no cover


__all__ = [
    "BATCH",
    "ELIMINATED",
    "NON_INFERIOR",
    "N_MAX",
    "WORSE",
    "ZONE_PP",
    "Entrant",
    "MarginTests",
    "Race",
    "RaceRule",
    "RaceState",
    "Round",
    "Standing",
    "simulate",
]  # fmt: skip
