"""Routing decisions on a simulated phase 1: the old rule, the non-inferiority rule at fixed n, and the race.

Run: .venv/bin/python benchmarks/routing_sim.py [--reps 200] [--margin 5] [--zone 2]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md (and the one-line summary the
issue asks for).

Ground truth. The study's phase 1 (`../shared/SPEC.md`): six models × nine tasks. Each cell's true accuracy is the
model's average baseline plus the cell's optimization delta (the study gives baselines only per model, so every
task of a model starts from the model's average: an assumption), clipped to [2%, 98%]. Per task the reference is
the API model with the higher true accuracy; the candidates are the four local models, priced by size (GPU time:
llama3.2 3B < mistral 7B = qwen2.5:7b 7B < phi4 14B). A candidate is truly non-inferior when its true accuracy is
above the reference's minus δ; the right decision is the cheapest such candidate, else keep the reference.

Outcomes. Per candidate, the share of examples on which it and the reference disagree is drawn afresh for every
replicate, uniformly from 4–66% (the range seen in the published per-example outcomes of the study this project
reproduces: 4–8% on RAG and code, 16–66% elsewhere), as far as the two accuracies allow; the reference's 0/1
outcomes are Bernoulli(accuracy) and each candidate's follow from the paired 2×2 table that this disagreement and
the two accuracies fix.

Designs, on the same simulated examples (the first 50 are the trials' own):
- old rule, n = 50: the cheapest candidate *not significantly worse* (the report's paired test, p < 0.05) — what
  `analysis/routing.py` did before;
- fixed n: the non-inferiority rule (`trainables.stats.noninferiority`, Bonferroni over the 4 candidates) after n
  examples on every program;
- race: `trainables.stats.race` from the trials' 50 examples, rounds of 25, to `n_max` (default: the split's size).

Decisions are scored ε-PAC (ε = `--zone`): correct unless the task is routed to a model truly more than δ worse
(wrongly routed) or to a model dearer than the cheapest candidate truly above −δ + ε (the reference counts as
dearest, so keeping it, decided or not, is wrong when such a candidate exists). `undecided` says how often a
design ended without a decision (the reference kept for now). LM calls count one per program per example, the
reference's shared across candidates.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import record  # noqa: E402
from synthetic import BASELINE_AVG, DELTAS, MODELS  # noqa: E402  (SPEC.md's phase-1 numbers, held once)

from trainables.stats.noninferiority import Candidate, Rule, decide, spread_of  # noqa: E402
from trainables.stats.paired import paired_delta  # noqa: E402
from trainables.stats.race import Entrant, RaceRule, simulate  # noqa: E402

DISAGREEMENT = (0.04, 0.66)

API = ("gpt-4o", "gpt-5.2")
LOCAL_COST = {"llama3.2": 3.0, "mistral": 7.0, "qwen2.5:7b": 7.0, "phi4": 14.0}
"""Relative price per call of the local models: GPU time, proportional to parameters (an assumption)."""
SPLIT = {
    "classification": 3080,
    "math": 1319,
    "qa": 7405,
    "extraction": 3453,
    "analysis": 3270,
    "synthesis": 11334,
    "agentic": 687,
    "rag": 10570,
    "code": 164,
}
"""Test split sizes (SPEC.md): the race's default n_max is the split's size or 500."""
TRIAL_N = 50
FIXED_NS = (50, 100, 200, 400, 800, 1600, 3200)


def accuracies() -> dict[str, dict[str, float]]:
    """task → model → true accuracy in [0.02, 0.98]."""
    return {
        task: {m: float(np.clip((BASELINE_AVG[m] + d) / 100, 0.02, 0.98)) for m, d in zip(MODELS, deltas, strict=True)}
        for task, deltas in DELTAS.items()
    }


def outcomes(acc: dict[str, float], reference: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n examples' 0/1 outcomes: the reference's, and each candidate's from its 2×2 table with the reference at a
    disagreement drawn from `DISAGREEMENT` (within what the two accuracies allow)."""
    pr = acc[reference]
    ref = rng.random(n) < pr
    out = {reference: ref.astype(float)}
    for m, pc in acc.items():
        if m == reference or m in API:
            continue
        gap = pc - pr
        # up = (D + gap) / 2 ≤ min(pc, 1 − pr) and down = (D − gap) / 2 ≤ min(pr, 1 − pc)
        most = min(2 * min(pc, 1 - pr) - gap, 2 * min(pr, 1 - pc) + gap, DISAGREEMENT[1])
        least = min(max(DISAGREEMENT[0], abs(gap)), most)
        d = rng.uniform(least, most)
        up, down = (d + gap) / 2, (d - gap) / 2
        u = rng.random(n)
        cand = np.where(ref, u >= down / pr, u < up / (1 - pr))
        out[m] = cand.astype(float)
    return out


@dataclass
class Tally:
    correct: int = 0
    wrong: int = 0
    undecided: int = 0
    calls: int = 0
    total: int = 0

    def add(self, kind: str, model: str, bad: set[str], allowed: set[str], calls: int) -> None:
        """`allowed`: the models an ε-PAC decision may serve (none dearer than the cheapest truly above −δ + ε)."""
        self.total += 1
        self.calls += calls
        self.undecided += kind == "undecided"
        if model in bad:
            self.wrong += 1
        elif model in allowed:
            self.correct += 1

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def share(self) -> float:
        return self.correct / max(self.total, 1)

    def row(self, name: str, fixed_calls: float | None = None) -> str:
        t = max(self.total, 1)
        share = f"{100 * self.calls / fixed_calls:.0f}%" if fixed_calls else "–"
        cells = (self.correct, self.wrong, self.undecided)
        return (
            f"| {name} | " + " | ".join(f"{100 * c / t:.1f}%" for c in cells) + f" | {self.calls / t:,.0f} | {share} |"
        )


def old_rule(ref: np.ndarray, cands: dict[str, np.ndarray], reference: str) -> str:
    """The rule `analysis/routing.py` used before: the cheapest candidate unless it is significantly worse."""
    for name in sorted(cands, key=lambda c: (LOCAL_COST[c], c)):
        d = paired_delta(ref, cands[name])
        if not (d.significant and d.delta_pp < 0):
            return name
    return reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="replicates per task")
    parser.add_argument("--margin", type=float, default=5.0, help="non-inferiority margin δ (pp)")
    parser.add_argument("--zone", type=float, default=2.0, help="indifference zone ε (pp) of the race and of ε-PAC")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument(
        "--n-max",
        type=int,
        default=None,
        help="most examples per program (default: the split's size, as `arb route`'s default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    race_rule = RaceRule(margin_pp=args.margin, batch=args.batch, n_max=args.n_max or max(SPLIT.values()),
                         zone_pp=args.zone)  # fmt: skip
    tallies: dict[str, dict[str, Tally]] = {}  # design → task → tally
    designs = ["old", *(f"fixed {n}" for n in FIXED_NS), "race"]
    per_task: list[str] = []
    discord: list[float] = []
    started = time.time()
    for task, acc in accuracies().items():
        reference = max(API, key=lambda m: acc[m])
        locals_ = [m for m in MODELS if m not in API]
        gap = {m: acc[m] - acc[reference] for m in locals_}
        bad = {m for m in locals_ if gap[m] <= -args.margin / 100}
        good = [m for m in locals_ if gap[m] > (-args.margin + args.zone) / 100]
        if good:
            limit = min(LOCAL_COST[m] for m in good)
            allowed = {m for m in locals_ if m not in bad and LOCAL_COST[m] <= limit}
        else:
            allowed = {reference, *(m for m in locals_ if m not in bad)}
        cap = min(SPLIT[task], args.n_max or SPLIT[task])
        entrants = [Entrant(m, LOCAL_COST[m]) for m in locals_]
        rule = Rule(args.margin, candidates=len(locals_))
        t = {d: tallies.setdefault(d, {}).setdefault(task, Tally()) for d in designs}
        for _ in range(args.reps):
            out = outcomes(acc, reference, cap, rng)
            ref = out[reference]
            discord += [float(np.mean(out[m] != ref)) for m in locals_]
            chosen = old_rule(ref[:TRIAL_N], {m: out[m][:TRIAL_N] for m in locals_}, reference)
            t["old"].add("route", chosen, bad, allowed, (len(locals_) + 1) * TRIAL_N)
            for n in FIXED_NS:
                k = min(n, cap)
                cands = [
                    Candidate(m, LOCAL_COST[m], 0.0, rule.compare(ref[:k], out[m][:k]), spread_of(ref[:k], out[m][:k]))
                    for m in locals_
                ]
                dec = decide(rule, reference, cands)
                t[f"fixed {n}"].add(dec.kind, dec.model, bad, allowed, (len(locals_) + 1) * k)
            state = simulate(race_rule, entrants, ref, {m: out[m] for m in locals_}, TRIAL_N, reference)
            assert state.decision is not None
            t["race"].add(state.decision.kind, state.decision.model, bad, allowed, sum(state.calls.values()))
        r = t["race"]
        gaps = ", ".join(f"{m} {100 * gap[m]:+.1f}" for m in locals_)
        per_task.append(
            f"| {task} | {reference} {100 * acc[reference]:.1f}% | {gaps} | {', '.join(sorted(allowed))} | {cap} | "
            f"{100 * r.correct / r.total:.0f}% | {100 * r.wrong / r.total:.1f}% | "
            f"{100 * r.undecided / r.total:.0f}% | {r.calls / r.total:,.0f} |"
        )

    total = {d: sum(tallies[d].values(), Tally()) for d in designs}
    race = total["race"]
    # the cheapest fixed design whose ε-PAC score is at least the race's
    match = next((n for n in FIXED_NS if total[f"fixed {n}"].share() >= race.share()), None)
    matched_calls = total[f"fixed {match}" if match else f"fixed {FIXED_NS[-1]}"].calls
    matched = f"n = {match}" if match else f"n = {FIXED_NS[-1]}, which does not reach the same score"
    line = (
        f"race: correct decisions {100 * race.share():.1f}%, wrongly routed {100 * race.wrong / race.total:.1f}%, "
        f"LM calls {100 * race.calls / matched_calls:.0f}% of the fixed design ({matched})"
    )
    lines = [
        *record.heading(),
        f"9 tasks × {args.reps} replicates ({9 * args.reps} races); δ = {args.margin:g} pp, ε = {args.zone:g} pp; "
        f"disagreement per candidate and replicate drawn from {100 * DISAGREEMENT[0]:.0f}–{100 * DISAGREEMENT[1]:.0f}% "
        f"(mean {100 * float(np.mean(discord)):.0f}%); race: rounds of {args.batch} from the trials' {TRIAL_N}, "
        f"n_max = {args.n_max or 'the split size'}; fixed designs use min(n, n_max) and the report's Tango interval "
        f"(Bonferroni over 4). `correct` is the ε-PAC score; `calls vs matched fixed`: against the cheapest fixed n "
        f"whose ε-PAC score is at least the race's. {time.time() - started:.0f} s.",
        "",
        "| design | correct (ε-PAC) | wrongly routed | undecided | LM calls per task | calls vs matched fixed |",
        "|---|---|---|---|---|---|",
        total["old"].row(f"old rule (not significantly worse), n = {TRIAL_N}"),
        *(total[f"fixed {n}"].row(f"non-inferiority, fixed n = {n}") for n in FIXED_NS),
        race.row("race", matched_calls),
        "",
        "Per task (race): truth from the simulated accuracies; gaps are candidate − reference in pp; `ε-PAC picks`: "
        "the models a correct decision may serve.",
        "",
        "| task | reference | candidates' true gaps (pp) | ε-PAC picks | n_max | correct | wrongly routed | "
        "undecided | calls |",
        "|---|---|---|---|---|---|---|---|---|",
        *per_task,
        "",
        line,
    ]
    record.append("Routing decisions, simulated phase 1 (benchmarks/routing_sim.py)", lines)


if __name__ == "__main__":
    main()
