"""Routing decisions on a simulated phase 1: the old rule, the non-inferiority rule at fixed n, and the race.

Run: .venv/bin/python benchmarks/routing_sim.py [--reps 200] [--rho 0.5] [--margin 5]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md (and the one-line summary the
issue asks for).

Ground truth. The study's phase 1 (`../shared/SPEC.md`): six models × nine tasks. Each cell's true accuracy is the
model's average baseline plus the cell's optimization delta (the study gives baselines only per model, so every
task of a model starts from the model's average: an assumption), clipped to [2%, 98%]. Per task the reference is
the API model with the higher true accuracy; the candidates are the four local models, priced by size (GPU time:
llama3.2 3B < mistral 7B = qwen2.5:7b 7B < phi4 14B). A candidate is truly non-inferior when its true accuracy is
above the reference's minus δ; the right decision is the cheapest such candidate, else keep the reference.

Outcomes. Per example all six models' 0/1 outcomes come from one latent-factor model: example difficulty
z ~ N(0, 1) shared, each model right when √ρ·z + √(1−ρ)·ε < Φ⁻¹(accuracy), ε independent per model. ρ is a
stated parameter (how much models agree on which examples are hard); the table prints the disagreement rate it
gives between candidate and reference.

Designs, on the same simulated examples (the first 50 are the trials' own):
- old rule, n = 50: the cheapest candidate *not significantly worse* (sign-flip test, p < 0.05) — what
  `analysis/routing.py` did before;
- fixed n: the non-inferiority rule (`trainables.stats.noninferiority`, Bonferroni over the 4 candidates) after n
  examples on every program;
- race: `trainables.stats.race` from the trials' 50 examples, rounds of 25, to `n_max` (default: the split's size).

Decisions are scored against the truth: correct (the truth's decision), wrongly routed (to a model truly more than
δ worse), undecided, or other (a safe but dearer model; the reference kept though a candidate qualifies). LM
calls count one per program per example, the reference's shared across candidates.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import record  # noqa: E402
from synthetic import BASELINE_AVG, DELTAS, MODELS  # noqa: E402  (SPEC.md's phase-1 numbers, held once)

from trainables.stats.noninferiority import Candidate, Rule, decide, spread_of  # noqa: E402
from trainables.stats.paired import paired_delta  # noqa: E402
from trainables.stats.race import Entrant, RaceRule, simulate  # noqa: E402

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


def outcomes(acc: dict[str, float], n: int, rho: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n examples' 0/1 outcomes for every model, correlated through a shared difficulty."""
    z = rng.standard_normal(n)
    return {
        m: (np.sqrt(rho) * z + np.sqrt(1 - rho) * rng.standard_normal(n) < norm.ppf(p)).astype(float)
        for m, p in acc.items()
    }


@dataclass
class Tally:
    correct: int = 0
    wrong: int = 0
    undecided: int = 0
    dearer: int = 0
    kept: int = 0
    calls: int = 0
    total: int = 0

    def add(self, kind: str, model: str, truth: str, bad: set[str], reference: str, calls: int) -> None:
        self.total += 1
        self.calls += calls
        if kind == "undecided":
            self.undecided += 1
        elif model == truth:
            self.correct += 1
        elif model in bad:
            self.wrong += 1
        elif model == reference:
            self.kept += 1
        else:
            self.dearer += 1

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def row(self, name: str, fixed_calls: float | None = None) -> str:
        t = max(self.total, 1)
        share = f"{100 * self.calls / fixed_calls:.0f}%" if fixed_calls else "–"
        cells = (self.correct, self.wrong, self.undecided, self.dearer, self.kept)
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
    parser.add_argument("--rho", type=float, default=0.5, help="latent correlation of outcomes across models")
    parser.add_argument("--margin", type=float, default=5.0, help="non-inferiority margin δ (pp)")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument(
        "--n-max",
        type=int,
        default=None,
        help="most examples per program (default: the split's size, as `arb route`'s default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--zone",
        type=float,
        default=2.0,
        help="a task is decidable when every candidate's true gap is this far (pp) from −δ",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    race_rule = RaceRule(margin_pp=args.margin, batch=args.batch, n_max=args.n_max or max(SPLIT.values()))
    tallies: dict[str, dict[str, Tally]] = {}  # design → task → tally
    designs = ["old", *(f"fixed {n}" for n in FIXED_NS), "race"]
    clear: list[str] = []
    per_task: list[str] = []
    discord: list[float] = []
    for task, acc in accuracies().items():
        reference = max(API, key=lambda m: acc[m])
        locals_ = [m for m in MODELS if m not in API]
        by_cost = sorted(locals_, key=lambda c: (LOCAL_COST[c], c))
        truly_ok = [m for m in by_cost if acc[m] > acc[reference] - args.margin / 100]
        truth = truly_ok[0] if truly_ok else reference
        bad = {m for m in locals_ if m not in truly_ok}
        if all(abs(100 * (acc[m] - acc[reference]) + args.margin) >= args.zone for m in locals_):
            clear.append(task)
        cap = min(SPLIT[task], args.n_max or SPLIT[task])
        entrants = [Entrant(m, LOCAL_COST[m]) for m in locals_]
        rule = Rule(args.margin, candidates=len(locals_))
        t = {d: tallies.setdefault(d, {}).setdefault(task, Tally()) for d in designs}
        for _ in range(args.reps):
            out = outcomes(acc, cap, args.rho, rng)
            ref = out[reference]
            discord += [float(np.mean(out[m] != ref)) for m in locals_]
            chosen = old_rule(ref[:TRIAL_N], {m: out[m][:TRIAL_N] for m in locals_}, reference)
            t["old"].add("route", chosen, truth, bad, reference, (len(locals_) + 1) * TRIAL_N)
            for n in FIXED_NS:
                k = min(n, cap)
                cands = [
                    Candidate(m, LOCAL_COST[m], 0.0, rule.compare(ref[:k], out[m][:k]), spread_of(ref[:k], out[m][:k]))
                    for m in locals_
                ]
                dec = decide(rule, reference, cands)
                kind = "undecided" if dec.kind == "undecided" else "route"
                t[f"fixed {n}"].add(kind, dec.model, truth, bad, reference, (len(locals_) + 1) * k)
            state = simulate(race_rule, entrants, ref, {m: out[m] for m in locals_}, TRIAL_N, reference)
            assert state.decision is not None
            kind = "undecided" if state.decision.kind == "undecided" else "route"
            t["race"].add(kind, state.decision.model, truth, bad, reference, sum(state.calls.values()))
        r = t["race"]
        gaps = ", ".join(f"{m} {100 * (acc[m] - acc[reference]):+.1f}" for m in locals_)
        per_task.append(
            f"| {task} | {reference} {100 * acc[reference]:.1f}% | {gaps} | {truth} | {cap} | "
            f"{100 * r.correct / r.total:.0f}% | {100 * r.wrong / r.total:.0f}% | "
            f"{100 * r.undecided / r.total:.0f}% | {r.calls / r.total:,.0f} |"
        )

    def summary(tasks: list[str]) -> tuple[list[str], str]:
        """The designs' table over `tasks`, and the race's one-line summary against the matched fixed design."""
        total = {d: sum((tallies[d][k] for k in tasks), Tally()) for d in designs}
        race = total["race"]
        # the fixed design that matches the race's share of correct decisions, with the fewest calls
        match = next((n for n in FIXED_NS if total[f"fixed {n}"].correct >= race.correct), None)
        matched_calls = total[f"fixed {match}" if match else f"fixed {FIXED_NS[-1]}"].calls
        matched = f"n = {match}" if match else f"n = {FIXED_NS[-1]}, which does not reach the same accuracy"
        rows = [
            "| design | correct | wrongly routed | undecided | routed to a dearer safe model | reference kept though "
            "one qualifies | LM calls per task | calls vs matched fixed |",
            "|---|---|---|---|---|---|---|---|",
            total["old"].row(f"old rule (not significantly worse), n = {TRIAL_N}"),
            *(total[f"fixed {n}"].row(f"non-inferiority, fixed n = {n}") for n in FIXED_NS),
            race.row("race", matched_calls),
        ]
        line = (
            f"race: correct decisions {100 * race.correct / race.total:.1f}%, wrongly routed "
            f"{100 * race.wrong / race.total:.1f}%, LM calls {100 * race.calls / matched_calls:.0f}% of the fixed "
            f"design ({matched})"
        )
        return rows, line

    every, every_line = summary(list(tallies["race"]))
    decidable, decidable_line = summary(clear)
    lines = [
        *record.heading(),
        f"9 tasks × {args.reps} replicates; δ = {args.margin:g} pp; latent ρ = {args.rho:g} (candidate and reference "
        f"disagree on {100 * float(np.mean(discord)):.0f}% of examples on average); race: rounds of {args.batch} "
        f"from the trials' {TRIAL_N}, n_max = {args.n_max or 'the split size'}; fixed designs use min(n, n_max). "
        "Calls: per task, one per program per example. `calls vs matched fixed`: against the smallest fixed n whose "
        "share of correct decisions is at least the race's.",
        "",
        "All nine tasks:",
        "",
        *every,
        "",
        f"The {len(clear)} tasks whose candidates all lie at least {args.zone:g} pp from the margin "
        f"({', '.join(clear)}); the others have a candidate within {args.zone:g} pp of −δ, which no design "
        "separates from the margin within the split:",
        "",
        *decidable,
        "",
        "Per task (race): truth from the simulated accuracies; gaps are candidate − reference in pp.",
        "",
        "| task | reference | candidates' true gaps (pp) | right decision | n_max | correct | wrongly routed | "
        "undecided | calls |",
        "|---|---|---|---|---|---|---|---|---|",
        *per_task,
        "",
        f"All tasks: {every_line}",
        f"Tasks at least {args.zone:g} pp from the margin: {decidable_line}",
    ]
    record.append("Routing decisions, simulated phase 1 (benchmarks/routing_sim.py)", lines)


if __name__ == "__main__":
    main()
