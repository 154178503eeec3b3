"""Sequential against fixed evaluation on a simulated phase 1 (issue: decide with fewer calls).

Run: .venv/bin/python benchmarks/sequential_sim.py [--reps 200] [--null-reps 4000] [--rho 0 0.3 0.6]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.

The 54 (model, task) cells of the study's phase 1 (`../shared/SPEC.md`, "The study's reported numbers"): each
cell's optimization delta is the study's; the study gives baselines only per model (average over the nine tasks),
so **every cell's baseline is its model's average baseline** (an assumption), and the optimized rate is the
baseline plus the delta, clipped to [0, 1]. Per example, baseline and optimized are correlated 0/1 outcomes with
those rates and correlation `rho` (a stated parameter: how often both conditions get the same example right or
wrong; graded metrics such as extraction's F1 are simulated as 0/1 too). Each replicate draws 50 examples in a
random order and decides it twice:

- fixed: the report's paired test at n = 50 (`trainables.stats.paired.paired_delta`: Tango's interval for 0/1
  scores), and
- sequential: `trainables.stats.sequential` with n_max = 50, n_min = 10, a check every 5 examples, equivalence ±10 pp
  (the issue's rule), and the same with the opt-in futility stop at 0.1,

on the same examples (the sequential one sees a prefix). Reported: LM calls saved (evaluated pairs against 2 × 50,
all cells and replicates), the share of replicates whose verdicts agree (improved / worse / otherwise, with
`equivalent` counted as "no significant change"), the share of cells whose verdicts agree in most replicates, and
the false-positive rate of both with a true effect of 0 (each model's baseline rate for both conditions), over
`--null-reps` replicates per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import record  # noqa: E402
from synthetic import BASELINE_AVG, DELTAS, MODELS  # noqa: E402  (SPEC.md's phase-1 numbers, held once)

from trainables.stats.paired import delta_verdict, paired_delta  # noqa: E402
from trainables.stats.sequential import STOP_REASONS, StopRule, run  # noqa: E402

BASELINES = BASELINE_AVG
"""SPEC.md: per-model average baseline over the nine tasks (%), used for every task of the model."""
N = 50
RULES = {
    "as specified": StopRule(n_max=N, n_min=10, equivalence_pp=10.0, check_every=5),
    "with futility 0.1": StopRule(n_max=N, n_min=10, equivalence_pp=10.0, check_every=5, futility=0.1),
}
"""The issue's rule (decided / equivalent / max), and the same with the opt-in futility stop."""


def paired_outcomes(p_base: float, p_opt: float, rho: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n differences (optimized − baseline) of 0/1 outcomes with these rates and correlation (clipped to what the
    rates allow)."""
    joint = np.sqrt(p_base * (1 - p_base) * p_opt * (1 - p_opt))
    both = float(np.clip(p_base * p_opt + rho * joint, max(0.0, p_base + p_opt - 1), min(p_base, p_opt)))
    probs = np.array([both, p_base - both, p_opt - both, 1 - p_base - p_opt + both])  # 11, 10, 01, 00
    kind = rng.choice(4, size=n, p=np.clip(probs, 0, None) / np.clip(probs, 0, None).sum())
    return (kind == 2).astype(float) - (kind == 1).astype(float)


def verdict_of_sequential(reason: str) -> str:
    return {"decided_improved": "improved", "decided_hurt": "worse"}.get(reason, "no significant change")


def cells() -> list[tuple[str, str, float, float]]:
    return [
        (model, task, BASELINES[model] / 100, float(np.clip((BASELINES[model] + deltas[i]) / 100, 0, 1)))
        for task, deltas in DELTAS.items()
        for i, model in enumerate(MODELS)
    ]


def simulate(rule: StopRule, rho: float, reps: int, null_reps: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    pairs_used = agree = total = cells_agree = 0
    reasons: dict[str, int] = {}
    for _, _, p_base, p_opt in cells():
        cell_agree = 0
        for _ in range(reps):
            d = paired_outcomes(p_base, p_opt, rho, N, rng)
            fixed = delta_verdict(paired_delta(np.zeros(N), d))  # b − a = d
            decision = run(rule, d)
            pairs_used += decision.n
            reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
            same = fixed == verdict_of_sequential(decision.reason)
            cell_agree += same
            total += 1
        agree += cell_agree
        cells_agree += cell_agree * 2 > reps
    fp_fixed = fp_seq = null_total = 0
    for p in BASELINES.values():
        for _ in range(null_reps):
            d = paired_outcomes(p / 100, p / 100, rho, N, rng)
            fp_fixed += delta_verdict(paired_delta(np.zeros(N), d)) != "no significant change"
            fp_seq += run(rule, d).reason in ("decided_improved", "decided_hurt")
            null_total += 1
    return {
        "saved": 1 - pairs_used / (total * N),
        "agree": agree / total,
        "cells_agree": cells_agree / len(cells()),
        "fp_fixed": fp_fixed / null_total,
        "fp_seq": fp_seq / null_total,
        "null_total": null_total,
        **{f"stop_{k}": v / total for k, v in reasons.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="replicates per cell")
    parser.add_argument("--null-reps", type=int, default=4000, help="null replicates per model (6 models)")
    parser.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first = RULES["as specified"]
    lines = [
        *record.heading(),
        f"54 cells (SPEC.md phase-1 deltas; each cell's baseline = its model's average baseline), {args.reps} "
        f"replicates per cell, n_max = {N}, n_min = {first.n_min}, check every {first.check_every}, equivalence "
        f"±{first.equivalence_pp:g} pp; null: {args.null_reps} replicates per model (6 models). Fixed: the "
        "report's paired test at n = 50.",
        "",
        "| rule | ρ (pairing) | LM calls saved | verdicts agree (replicates) | cells agreeing (majority) | false "
        "positives, fixed | false positives, sequential | stopped: improved / hurt / equivalent / futile / max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rule in RULES.items():
        for rho in args.rho:
            r = simulate(rule, rho, args.reps, args.null_reps, args.seed)
            stops = " / ".join(f"{100 * r.get(f'stop_{k}', 0.0):.0f}%" for k in STOP_REASONS)
            lines.append(
                f"| {name} | {rho:g} | {100 * r['saved']:.1f}% | {100 * r['agree']:.1f}% "
                f"| {100 * r['cells_agree']:.0f}% | {100 * r['fp_fixed']:.2f}% "
                f"| {100 * r['fp_seq']:.2f}% (of {r['null_total']}) | {stops} |"
            )
    record.append("Sequential evaluation, simulated phase 1 (benchmarks/sequential_sim.py)", lines)


if __name__ == "__main__":
    main()
