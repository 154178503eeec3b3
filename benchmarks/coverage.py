"""Coverage of every interval the report and the race use, over the cases that occur: few examples, few
disagreements, and the margin itself.

Run: .venv/bin/python benchmarks/coverage.py [--reps 4000] [--margin 5]
Appends the tables and the one-line summary to BENCHMARKS.md.

Cells: n ∈ {8, 20, 50, 200, 1000} × disagreement ∈ {0, 2, 6, 10, 25, 50%} (share of examples whose two scores
differ) × true gap ∈ {−δ, 0, +δ}; a cell whose gap exceeds its disagreement cannot occur and is skipped.

- fixed, 0/1 scores (`trainables.stats.paired.tango`): computed exactly, by summing the trinomial probability of
  every (up, down) table whose interval misses the truth; no Monte Carlo error. Also at the Bonferroni level the
  routing rule uses for four candidates (each end α/8).
- fixed, continuous scores (the betting interval): Monte Carlo, `--reps` samples per cell. A disagreeing example's
  difference is 2·Beta − 1 with mean gap / disagreement (concentration 2: spread over most of [−1, 1]); a tie is 0.
  A miss is the true mean rejected by the permutation-averaged capital, which is what the interval is made of.
- sequential (the trials' confidence sequence), 0/1 and continuous: Monte Carlo, looked at after every example up
  to n; a miss is the truth rejected at any look.
- the race at the margin (its sequence looked at after every example and its fixed-n look at the cap, here n;
  k = 1 and k = 4 candidates, one-sided α/(2k); the larger of 0/1 and continuous): the rate at which a candidate
  whose true gap is exactly −δ is shown non-inferior.

"one-sided" columns give the larger of the two tails (the interval above the truth, or below it), each against its
nominal α/2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import record  # noqa: E402

from trainables.stats import betting  # noqa: E402
from trainables.stats.paired import ALPHA, PERMUTATIONS, table_probabilities, tango_z  # noqa: E402
from trainables.stats.race import FINAL_SHARE  # noqa: E402

NS = (8, 20, 50, 200, 1000)
DISAGREEMENT = (0.0, 0.02, 0.06, 0.10, 0.25, 0.50)
CONCENTRATION = 2.0


def cells(margin: float) -> list[tuple[int, float, float]]:
    return [(n, dis, gap) for n in NS for dis in DISAGREEMENT for gap in (-margin, 0.0, margin)
            if abs(gap) <= dis + 1e-12]  # fmt: skip


def tango_exact(n: int, dis: float, gap: float, alpha: float) -> tuple[float, float]:
    """(coverage, larger one-sided miss) of the corrected Tango interval, summed over every table."""
    p = table_probabilities(n, dis, gap)
    z = tango_z(np.arange(n + 1)[:, None], np.arange(n + 1)[None, :], n, gap)
    crit = float(norm.ppf(1 - alpha / 2))
    above, below = float(p[z >= crit].sum()), float(p[z <= -crit].sum())  # interval above / below the truth
    return 1 - above - below, max(above, below)


def fine_scan() -> list[str]:
    """The corrected Tango interval, exactly, on a much finer grid than the cells and at every Bonferroni level
    the routing rule uses for 1 to 5 candidates: the worst coverage and the worst one-sided miss per level."""
    out = ["", "Tango's interval on a fine grid (exact): n ∈ {5, 8, 12, 16, 20, 30, 40, 50, 75, 100, 150, 200, 300, "
           "500, 1000} × disagreement 1–19% by 1 and 20–75% by 5 × gap −20…+20 pp by 1.", "",
           "| level α | worst coverage (nominal) | at (n, disagreement, gap) | worst one-sided (nominal) | at |",
           "|---|---|---|---|---|"]  # fmt: skip
    for alpha in (0.05, 0.025, 0.05 / 3, 0.0125, 0.01):
        worst_cov, worst_one, at_cov, at_one = 1.0, 0.0, "", ""
        for n in (5, 8, 12, 16, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000):
            for dis in np.r_[np.arange(0.01, 0.2, 0.01), np.arange(0.2, 0.8, 0.05)]:
                for gap in np.arange(-0.2, 0.205, 0.01):
                    if abs(gap) > dis + 1e-12:
                        continue
                    cov, one = tango_exact(n, float(dis), float(gap), alpha)
                    where = f"({n}, {100 * dis:.0f}%, {100 * gap:+.0f})"
                    if cov < worst_cov:
                        worst_cov, at_cov = cov, where
                    if one > worst_one:
                        worst_one, at_one = one, where
        out.append(f"| {alpha:.4f} | {pct(worst_cov)} ({pct(1 - alpha)}) | {at_cov} | {100 * worst_one:.3f}% "
                   f"({100 * alpha / 2:.3f}%) | {at_one} |")  # fmt: skip
    return out


def differences(rng: np.random.Generator, reps: int, n: int, dis: float, gap: float, binary: bool) -> np.ndarray:
    """reps × n paired differences with disagreement `dis` and mean `gap`."""
    disagree = rng.random((reps, n)) < dis
    if binary:
        up = rng.random((reps, n)) < (dis + gap) / (2 * dis) if dis > 0 else np.zeros((reps, n), dtype=bool)
        values = np.where(up, 1.0, -1.0)
    else:
        mu = gap / dis if dis > 0 else 0.0
        a, b = CONCENTRATION * (1 + mu) / 2, CONCENTRATION * (1 - mu) / 2
        values = 2 * rng.beta(max(a, 1e-3), max(b, 1e-3), size=(reps, n)) - 1
    out: np.ndarray = np.where(disagree, values, 0.0)
    return out


def betting_fixed(rng: np.random.Generator, d: np.ndarray, truth: float, alpha: float) -> tuple[float, float]:
    """(coverage, larger one-sided miss) of the fixed-n betting interval at the true mean, over the rows of d."""
    rejected = betting_rejects(rng, d, truth, alpha)
    mean = d.mean(axis=1)
    above, below = float((rejected & (mean > truth)).mean()), float((rejected & (mean <= truth)).mean())
    return 1 - above - below, max(above, below)


def betting_rejects(rng: np.random.Generator, d: np.ndarray, truth: float, alpha: float) -> np.ndarray:
    """Per row of d: whether the permutation-averaged fixed-n betting capital at `truth` reaches 1/α."""
    m = (truth + 1) / 2
    logs = []
    for _ in range(PERMUTATIONS):
        x = betting.as_x(rng.permuted(d, axis=1))
        bets = betting.plugin_bets(x, alpha, horizon=x.shape[1])
        up = betting.log_wealth_up(x, bets, m, axis=1)[:, -1]
        down = betting.log_wealth_down(x, bets, m, axis=1)[:, -1]
        logs.append(betting.hedged(up, down))
    out: np.ndarray = logsumexp(np.array(logs), axis=0) - math.log(PERMUTATIONS) >= math.log(1 / alpha)
    return out


def sequence(d: np.ndarray, truth: float, alpha: float) -> tuple[float, float]:
    """(coverage at every look at once, larger one-sided miss) of the trials' confidence sequence."""
    x = betting.as_x(d)
    m = (truth + 1) / 2
    bets = betting.plugin_bets(x, alpha)
    log_capital = betting.hedged(betting.log_wealth_up(x, bets, m, axis=1), betting.log_wealth_down(x, bets, m, axis=1))
    hit = log_capital >= math.log(1 / alpha)
    ever = hit.any(axis=1)
    first = np.where(ever, hit.argmax(axis=1), 0)
    running = np.cumsum(x, axis=1) / np.arange(1, x.shape[1] + 1)
    above_at = running[np.arange(len(x)), first] > m
    above, below = float((ever & above_at).mean()), float((ever & ~above_at).mean())
    return 1 - above - below, max(above, below)


def race_margin(rng: np.random.Generator, d: np.ndarray, margin: float, level: float, binary: bool) -> float:
    """Share of paths on which the race calls a candidate whose true gap is exactly −δ non-inferior at one-sided
    `level`, the race's way (`trainables.stats.race`): its "above −δ" capital (aGRAPA bets) ever reaching 1 / its
    share of the level after any example, or its pre-planned fixed-n look at the cap (here n, the whole path: the
    report's interval at the rest of the level) clearing −δ. The verdict also needs every gap below −δ rejected,
    so the first part bounds it from above."""
    x = betting.as_x(d)
    m = (1 - margin) / 2
    seq_level, final_level = (1 - FINAL_SHARE) * level, FINAL_SHARE * level
    bet_up, _ = betting.grapa_bets(x, np.array([m]))
    log_up = betting.log_wealth_up(x, bet_up[..., 0], m, axis=1)
    routed = (log_up >= math.log(1 / seq_level)).any(axis=1)
    if binary:
        z = tango_z((d > 0).sum(axis=1), (d < 0).sum(axis=1), d.shape[1], -margin)
        routed |= z >= norm.ppf(1 - final_level)
    else:
        routed |= betting_rejects(rng, d, -margin, 2 * final_level) & (d.mean(axis=1) > -margin)
    return float(routed.mean())


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000, help="Monte Carlo samples per cell")
    parser.add_argument("--margin", type=float, default=5.0, help="δ in pp: the gaps ±δ of the cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fine", action="store_true", help="also scan Tango's interval exactly on a fine grid")
    args = parser.parse_args()
    margin, alpha = args.margin / 100, ALPHA
    rng = np.random.default_rng(args.seed)
    started = time.time()
    rows = []
    worst = {"fixed": 1.0, "sequential": 1.0}
    worst_one = {"fixed": 0.0, "sequential": 0.0}
    worst_bonf = 0.0
    worst_race = {1: 0.0, 4: 0.0}
    se = math.sqrt(alpha * (1 - alpha) / args.reps)
    for n, dis, gap in cells(margin):
        t_cov, t_one = tango_exact(n, dis, gap, alpha)
        _, t_bonf = tango_exact(n, dis, gap, alpha / 4)
        db, dc = differences(rng, args.reps, n, dis, gap, True), differences(rng, args.reps, n, dis, gap, False)
        b_cov, b_one = betting_fixed(rng, dc, gap, alpha)
        s_cov, s_one = sequence(db, gap, alpha)
        c_cov, c_one = sequence(dc, gap, alpha)
        race = {
            k: max(
                race_margin(rng, db, margin, alpha / (2 * k), True),
                race_margin(rng, dc, margin, alpha / (2 * k), False),
            )
            for k in (1, 4)
        }
        race = race if gap == -margin else {}
        worst["fixed"] = min(worst["fixed"], t_cov, b_cov)
        worst["sequential"] = min(worst["sequential"], s_cov, c_cov)
        worst_one["fixed"] = max(worst_one["fixed"], t_one, b_one)
        worst_one["sequential"] = max(worst_one["sequential"], s_one, c_one)
        worst_bonf = max(worst_bonf, t_bonf)
        for k, v in race.items():
            worst_race[k] = max(worst_race[k], v)
        race_cells = f"{pct(race[1])} / {pct(race[4])}" if race else "–"
        rows.append(f"| {n} | {100 * dis:.0f}% | {100 * gap:+.0f} | {pct(t_cov)} | {pct(t_one)} | {pct(t_bonf)} | "
                    f"{pct(b_cov)} | {pct(b_one)} | {pct(s_cov)} | {pct(c_cov)} | {pct(max(s_one, c_one))} | "
                    f"{race_cells} |")  # fmt: skip
    line = (f"coverage: worst cell {100 * worst['fixed']:.1f}% (fixed), {100 * worst['sequential']:.1f}% "
            f"(sequential), nominal {100 * (1 - alpha):.0f}%; one-sided at most {pct(worst_one['fixed'])} (fixed), "
            f"{pct(worst_one['sequential'])} (sequential), nominal {pct(alpha / 2)}; race at the margin at most "
            f"{pct(worst_race[1])} (nominal {pct(alpha / 2)}) and {pct(worst_race[4])} with 4 candidates "
            f"(nominal {pct(alpha / 8)})")  # fmt: skip
    lines = [
        *record.heading(),
        f"δ = {args.margin:g} pp; {args.reps} Monte Carlo samples per cell (standard error at 95% coverage: "
        f"{100 * se:.2f} pp); Tango columns exact; {time.time() - started:.0f} s.",
        "",
        "| n | disagree | gap (pp) | Tango: coverage | Tango: one-sided | Tango: one-sided at α/4 (nominal 0.625%) | "
        "betting (continuous): coverage | betting: one-sided | sequence 0/1: coverage | sequence continuous: "
        "coverage | sequence: one-sided | race at −δ, 1 / 4 candidates (nominal 2.5% / 0.625%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        *(fine_scan() if args.fine else []),
        "",
        line,
    ]
    record.append("Coverage of the intervals (benchmarks/coverage.py)", lines)


if __name__ == "__main__":
    main()
