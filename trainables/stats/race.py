"""The routing race: add test examples to a task's comparison only while its routing decision is still open.

A task's race compares a reference program with cheaper candidate programs on the task's test examples in their
seeded order (the trials' own examples first: they count). Each round scores the next `batch` examples on every
candidate still racing (the reference's outcomes are shared: scored once per example). After each round each
candidate's anytime-valid confidence sequence for (candidate − reference) is read (`trainables.stats.sequential`, at
the Bonferroni level of `trainables.stats.noninferiority.Rule` for the race's starting candidates, so looking after
every round costs no validity) and judged by the routing rule:

- a candidate leaves the race once decided: shown non-inferior (sequence above −margin) or worse than the
  margin (sequence below −margin); a candidate dearer than one shown non-inferior leaves too (it cannot be the
  pick);
- the task is decided when its cheapest non-inferior candidate has no cheaper one still open (route to it), or
  when every candidate is shown worse (keep the reference); otherwise it stops at `n_max` and says what it knows.

This is paired successive elimination in the sense of the adaptive-evaluation literature (e.g. Synchronized
Successive Rejects, arXiv 2606.07726: shared examples, paired differences, eliminate what is decided), with the
stopping rule replaced by the non-inferiority question and confidence sequences that stay valid at any stop.
The functions here are pure: `grid.route` feeds them outcomes and records what they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from trainables.stats.noninferiority import (
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
from trainables.stats.paired import ALPHA, CONFIDENCE_SEQUENCE, PairedDelta
from trainables.stats.sequential import RunningSequence

N_MAX = 500
"""A race's cap when none is given (`arb route` gives the test split's size unless `--n-max` says otherwise)."""
BATCH = 25
"""Default examples per round."""


@dataclass(frozen=True)
class RaceRule:
    """How a task's race runs: the routing rule's margin and error rate, the round size and the cap."""

    margin_pp: float = MARGIN_PP
    alpha: float = ALPHA
    batch: int = BATCH
    n_max: int = N_MAX
    bets: Literal["plug-in", "grapa"] = "grapa"
    """How the race's confidence sequences size their bets (`trainables.stats.sequential.RunningSequence`)."""

    def __post_init__(self) -> None:
        if self.batch < 1 or self.n_max < 1:
            raise ValueError(f"a race needs batch ≥ 1 and n_max ≥ 1, got {self.batch} and {self.n_max}")

    def rule(self, candidates: int) -> Rule:
        return Rule(self.margin_pp, self.alpha, candidates)


@dataclass(frozen=True)
class Entrant:
    """A candidate program: its name (the model, or model and optimizer), and its price per 1,000 calls."""

    name: str
    usd_per_1k: float
    latency_s_per_1k: float = 0.0


@dataclass(frozen=True)
class Standing:
    """A candidate after a round: examples it has scored, its gap to the reference with the sequence's interval
    (pp), and the rule's verdict."""

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
    """One task's race: the reference, the candidates and each candidate's running confidence sequence (carried
    across rounds, so a look costs only the new examples). Its verdicts are a function of the outcomes alone: a
    resumed race rebuilds the same state from the stored outcomes."""

    def __init__(self, rule: RaceRule, reference: str, entrants: Sequence[Entrant], n_max: int | None = None):
        if not entrants:
            raise ValueError("a race needs at least one candidate")
        self.rule, self.reference, self.entrants = rule, reference, list(entrants)
        self.cap = rule.n_max if n_max is None else min(n_max, rule.n_max)
        self.decision_rule = rule.rule(len(entrants))
        self._sequences = {e.name: RunningSequence(self.decision_rule.level, bets=rule.bets) for e in entrants}

    def standings(self, reference: np.ndarray, outcomes: Mapping[str, np.ndarray]) -> dict[str, Standing]:
        """Each candidate's sequence over the examples it shares with the reference (a prefix of the seeded
        order)."""
        out = {}
        for e in self.entrants:
            cand = np.asarray(outcomes.get(e.name, np.array([])), dtype=float)
            n = min(len(cand), len(reference))
            if n == 0:
                out[e.name] = Standing(e.name, 0, math.nan, -100.0, 100.0, UNDECIDED)
                continue
            diffs = cand[:n] - np.asarray(reference[:n], dtype=float)
            seq = self._sequences[e.name]
            seq.extend(diffs)
            look = seq.look
            d = PairedDelta(n, 100 * float(diffs.mean()), look.ci_low, look.ci_high, look.p_value,
                            int((diffs > 0).sum()), int((diffs < 0).sum()), test=CONFIDENCE_SEQUENCE)  # fmt: skip
            out[e.name] = Standing(e.name, n, d.delta_pp, d.ci_low, d.ci_high, self.decision_rule.verdict(d))
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
            state.decision = decide(self.decision_rule, self.reference, cands)
        return state

    def next_round(self, state: RaceState) -> Round:
        """The next round: the next `batch` examples for every candidate still racing, and the reference up to
        the furthest of them (its outcomes are shared, so each example costs it one call however many candidates
        race)."""
        have = {name: state.standings[name].n for name in state.racing}
        want = {name: range(n, min(self.cap, _next_look(n, self.rule.batch))) for name, n in have.items()}
        far = max((r.stop for r in want.values()), default=0)
        return Round(range(state.n_reference, max(far, state.n_reference)), want)


def _candidate(e: Entrant, s: Standing, reference: np.ndarray, outcomes: Mapping[str, np.ndarray]) -> Candidate:
    """A standing as the routing rule's `Candidate` (the sequence's interval; the spread for the estimate of
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
    "NON_INFERIOR",
    "N_MAX",
    "WORSE",
    "Entrant",
    "Race",
    "RaceRule",
    "RaceState",
    "Round",
    "Standing",
    "simulate",
]  # fmt: skip
