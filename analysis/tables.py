"""The study's tables as small pure functions: runs (and per-example scores) in, one table DataFrame out.

`runs` has one row per trial (see `analysis.runs.RUN_COLUMNS`); `examples` has one row per example and
condition (see `analysis.runs.EXAMPLE_COLUMNS`). Paired statistics use `examples`; plain averages use `runs`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.optimizers import OPTIMIZERS
from trainables.record.schema import ABLATION_KS, score_k
from trainables.stats.noninferiority import MARGIN_PP, Rule
from trainables.stats.paired import (
    CONFIDENCE_SEQUENCE,
    PairedDelta,
    delta_verdict,
    noise_floor_pp,
    outcome_label,
    paired_delta,
)

DONE = ("finished", "compile_failed")
TIER_NAMES = ("task-driven", "weakly task-driven", "model-dependent")


def label(key: object) -> str:
    """A table's index entry as a chart label: `mipro · qwen2.5:7b` for a (optimizer, model) pair."""
    return " · ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _done(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"].isin(DONE)]


COMPILING = sorted(name for name, o in OPTIMIZERS.items() if o.compiles)
"""Optimizers whose trials compile a program (not plain baselines, not ablations of a stored one)."""
ABLATING = sorted(name for name, o in OPTIMIZERS.items() if o.stored_program)
BASELINE_ONLY = sorted(name for name, o in OPTIMIZERS.items() if not o.compiles and not o.stored_program)


def optimized_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Trials of an optimization phase (not ablations, not plain baselines)."""
    done = _done(runs)
    return done[done["optimizer"].isin(COMPILING)]


def per_model_summary(runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex | None = None) -> pd.DataFrame:
    """Table 1: per optimizer and model, average baseline and optimized score over tasks, average delta, tasks
    improved. Per optimizer: an average over MIPROv2 and GEPA runs would describe neither. With `examples`, the
    paired 95% CI of the average delta (`ci_low`, `ci_high`: the paired interval on the per-example differences of
    all its trials pooled, which weighs the tasks equally when their n_eval is equal; `ci_test` says so)."""
    done = optimized_runs(runs)
    grouped = done.groupby(["optimizer", "model"], observed=True)
    table = pd.DataFrame(
        {
            "tasks": grouped["task"].nunique(),
            "trials": grouped.size(),
            "baseline": grouped["baseline_score"].mean(),
            "optimized": grouped["optimized_score"].mean(),
            "delta_pp": grouped["delta_pp"].mean(),
            "improved": grouped["delta_pp"].apply(lambda d: int((d > 0).sum())),
        }
    )
    if table.empty:
        return table
    if examples is not None:
        index = ScoreIndex.of(examples)
        tests = {}
        for key, group in grouped:
            pairs = [index.pairs(r, "baseline", r, "optimized") for r in group["run_id"]]
            d = paired_delta(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
            table.loc[key, ["ci_low", "ci_high"]] = [d.ci_low, d.ci_high]
            tests[key] = pair_test(d, *group.itertuples())
        table["ci_test"] = pd.Series(tests)
    order = table.reset_index().sort_values(["optimizer", "delta_pp"], ascending=[True, False], kind="stable")
    return table.loc[list(zip(order["optimizer"], order["model"], strict=True))]


def delta_matrix(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: optimization delta (pp), (optimizer, task) × model."""
    return optimized_runs(runs).pivot_table(index=["optimizer", "task"], columns="model", values="delta_pp",
                                        aggfunc="mean")  # fmt: skip


def tiers(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 5: per optimizer, tasks ordered by the cross-model population std of their deltas, cut into three
    equal tiers.

    Low spread means the task decides whether optimization helps (task-driven); high spread means it depends on
    the model (model-dependent).
    """
    matrix = delta_matrix(runs)
    parts = []
    for _, rows in matrix.groupby(level="optimizer", sort=True):
        spread = rows.std(axis=1, ddof=0).sort_values(kind="stable")
        n = len(spread)
        labels = [TIER_NAMES[min(i * 3 // max(n, 1), 2)] for i in range(n)]
        parts.append(pd.DataFrame({"std_pp": spread, "mean_delta_pp": rows.mean(axis=1)[spread.index],
                                   "tier": labels}))  # fmt: skip
    return pd.concat(parts) if parts else pd.DataFrame(columns=["std_pp", "mean_delta_pp", "tier"])


def demo_distribution(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 6: how many optimized programs ended up with each number of demos."""
    counts = optimized_runs(runs)["n_demos_chosen"].dropna().astype(int).value_counts().sort_index()
    return counts.rename_axis("demos").to_frame("programs")


class ScoreIndex:
    """Per-example scores looked up by (run id, condition), built once: reports pair thousands of runs. `column`:
    which score (`score`, or `strict_score`, whose rows without one are left out)."""

    def __init__(self, examples: pd.DataFrame, column: str = "score") -> None:
        if column not in examples:
            examples = examples.iloc[0:0].assign(**{column: pd.Series(dtype=float)})
        examples = examples[examples[column].notna()]
        ids = examples["example_id"].astype(str).to_numpy()
        scores = examples[column].to_numpy(dtype=float)
        groups = examples.groupby(["run_id", "condition"], sort=False).indices
        self._by = {(str(r), str(c)): (ids[pos], scores[pos]) for (r, c), pos in groups.items()}

    @classmethod
    def of(cls, examples: pd.DataFrame | ScoreIndex) -> ScoreIndex:
        return examples if isinstance(examples, ScoreIndex) else cls(examples)

    def pairs(self, run_a: str, cond_a: str, run_b: str, cond_b: str) -> tuple[np.ndarray, np.ndarray]:
        """Scores of two conditions on the examples both saw, aligned by example id."""
        empty = (np.array([], dtype=str), np.array([], dtype=float))
        (ids_a, a), (ids_b, b) = self._by.get((run_a, cond_a), empty), self._by.get((run_b, cond_b), empty)
        if len(ids_a) == len(ids_b) and np.array_equal(ids_a, ids_b):
            return a, b  # the usual case: same test examples in the same order
        _, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
        return a[ia], b[ib]


STOP_VERDICTS = {"decided_improved": "improved", "decided_hurt": "worse", "equivalent": "equivalent",
                 "futile": "no significant change", "max_reached": "no significant change"}  # fmt: skip
"""A sequential trial's verdict, from how its confidence sequence stopped (`trainables.stats.sequential`)."""


def _sequential(run: object) -> bool:
    return getattr(run, "stopping", "fixed") == "sequential" and pd.notna(getattr(run, "seq_ci_low", np.nan))


def trial_delta(run: object, index: ScoreIndex) -> PairedDelta:
    """A trial's own comparison of its two conditions: the paired interval on its examples, or for a trial
    that stopped sequentially the confidence sequence it stopped on (a fixed-n test on an adaptively stopped
    sample would not hold its level)."""
    a, b = index.pairs(run.run_id, "baseline", run.run_id, "optimized")  # type: ignore[attr-defined]
    if not _sequential(run):
        return paired_delta(a, b)
    diff = b - a
    return PairedDelta(len(diff), 100 * float(diff.mean()) if len(diff) else float("nan"),
                       float(run.seq_ci_low), float(run.seq_ci_high), float(run.seq_p_value),  # type: ignore[attr-defined]
                       int((diff > 0).sum()), int((diff < 0).sum()), test=CONFIDENCE_SEQUENCE)  # fmt: skip


def pair_test(d: PairedDelta, *runs: object) -> str:
    """Which test a comparison across trials used (`d.test`: Tango's interval for 0/1 scores, the betting interval
    otherwise, over their common examples), marked when one of them stopped sequentially (the common examples are
    then the ones it chose to stop at: indicative only)."""
    return f"{d.test} (a sequential stop: indicative)" if any(map(_sequential, runs)) else d.test


def delta_significance(runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex) -> pd.DataFrame:
    """Every optimization delta with its 95% interval, p-value and verdict, all three from one test (`test`): the
    paired interval of the score's kind (`trainables.stats.paired`) for trials that scored a fixed number of
    examples, the confidence sequence for trials
    that stopped sequentially (`stopped`: why)."""
    rows = []
    index = ScoreIndex.of(examples)
    for run in optimized_runs(runs).itertuples():
        d = trial_delta(run, index)
        sequential = _sequential(run)
        verdict = STOP_VERDICTS.get(str(run.stop_reason), "no data") if sequential else delta_verdict(d)
        rows.append(
            {
                "task": run.task,
                "model": run.model,
                "optimizer": run.optimizer,  # with n_labeled: which run a row is, when a grid varies them
                "n_labeled": run.n_labeled,
                "n": d.n,
                "delta_pp": d.delta_pp,
                "ci_low": d.ci_low,
                "ci_high": d.ci_high,
                "p_value": d.p_value,
                "noise_floor_pp": noise_floor_pp(d.n),
                "test": d.test,
                "stopped": str(run.stop_reason) if sequential else "",
                "verdict": verdict,
            }
        )
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["task", "model", "optimizer", "n_labeled"]).reset_index(drop=True)


def _shown(d: PairedDelta) -> str:
    """A part of a gain as its interval shows it: `gain`, `loss`, or `not shown` (which says nothing of its size:
    not a finding of zero)."""
    if d.n == 0:
        return "no data"
    return ("gain" if d.delta_pp > 0 else "loss") if d.significant else "not shown"


def _format_part(h_b: np.ndarray, h_o: np.ndarray, s_b: np.ndarray, s_o: np.ndarray) -> PairedDelta:
    """The format part (s_o − s_b) − (h_o − h_b) with its paired interval. Where no strict score exceeds its headline
    score (a strict match is also a lenient one: every task but rag), it is g_b − g_o for the format gap g = h − s
    in [0, 1], a paired difference of two scores like any other (Tango's interval when they are 0/1). Otherwise
    it is twice the difference of a = (s_b + h_o)/2 and b = (s_o + h_b)/2, both in [0, 1]: valid, but with the
    range of four scores to cover, wider."""
    if (s_b <= h_b).all() and (s_o <= h_o).all():
        return paired_delta(h_o - s_o, h_b - s_b)
    half = paired_delta((s_b + h_o) / 2, (s_o + h_b) / 2)
    return PairedDelta(half.n, 2 * half.delta_pp, 2 * half.ci_low, 2 * half.ci_high, half.p_value, half.up,
                       half.down, half.test)  # fmt: skip


def format_or_skill(runs: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """Every optimization delta split into answer format and skill, per task, model and optimizer.

    Per example, the strict score s (plain exact match of the answer) and the headline score h (the task's metric,
    which forgives format) of the baseline (b) and optimized (o) programs. The strict gain s_o − s_b is the skill
    the headline metric sees (h_o − h_b) plus the format part (s_o − s_b) − (h_o − h_b): the format errors the
    optimization fixed, which the headline metric had already forgiven the baseline. Each comes with its paired
    95% interval from `paired_delta` (the format part's: `_format_part`). `format_share`: the format
    part over the strict gain, where that gain is positive. Trials scored strictly (`scoring: strict`) have one
    score and are left out; `format`/`skill` say whether the interval shows a gain, a loss, or neither."""
    columns = ["task", "model", "optimizer", "n_labeled", "n", "strict_delta_pp", "strict_ci_low", "strict_ci_high",
               "skill_pp", "skill_ci_low", "skill_ci_high", "format_pp", "format_ci_low", "format_ci_high",
               "format_share", "format", "skill", "test"]  # fmt: skip
    done = optimized_runs(runs)
    done = done[done["scoring"].fillna("headline") == "headline"] if "scoring" in done else done
    if done.empty or "strict_score" not in examples:
        return pd.DataFrame(columns=columns)
    mine = examples[examples["run_id"].isin(set(done["run_id"])) & examples["strict_score"].notna()]
    wide = mine.pivot_table(index=["run_id", "example_id"], columns="condition", values=["score", "strict_score"],
                            aggfunc="first").dropna()  # fmt: skip
    by_run = dict(tuple(wide.groupby(level="run_id"))) if not wide.empty else {}
    rows = []
    for run in done.itertuples():
        table = by_run.get(run.run_id)
        if table is None or ("score", "optimized") not in table or ("score", "baseline") not in table:
            continue
        h_b, h_o = table[("score", "baseline")].to_numpy(float), table[("score", "optimized")].to_numpy(float)
        s_b, s_o = (
            table[("strict_score", "baseline")].to_numpy(float),
            table[("strict_score", "optimized")].to_numpy(float),
        )
        strict, skill = paired_delta(s_b, s_o), paired_delta(h_b, h_o)
        fmt = _format_part(h_b, h_o, s_b, s_o)
        rows.append(
            {
                "task": run.task, "model": run.model, "optimizer": run.optimizer, "n_labeled": run.n_labeled,
                "n": strict.n, "strict_delta_pp": strict.delta_pp, "strict_ci_low": strict.ci_low,
                "strict_ci_high": strict.ci_high, "skill_pp": skill.delta_pp, "skill_ci_low": skill.ci_low,
                "skill_ci_high": skill.ci_high, "format_pp": fmt.delta_pp, "format_ci_low": fmt.ci_low,
                "format_ci_high": fmt.ci_high,
                "format_share": fmt.delta_pp / strict.delta_pp if strict.delta_pp > 0 else np.nan,
                "format": _shown(fmt), "skill": _shown(skill),
                "test": f"{skill.test}; format part: {fmt.test}"
                + (" (a sequential stop: indicative)" if _sequential(run) else ""),
            }
        )  # fmt: skip
    if not rows:
        return pd.DataFrame(columns=columns)
    return (
        pd.DataFrame(rows, columns=columns)
        .sort_values(["task", "model", "optimizer", "n_labeled"])
        .reset_index(drop=True)
    )


def api_vs_best_local(
    runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex, margin_pp: float = MARGIN_PP
) -> pd.DataFrame:
    """Table 2: per task, the best API model's baseline against the best optimized local model, with the routing
    rule's verdict (`trainables.stats.noninferiority`: non-inferior only if the gap's 95% interval lies above −margin).

    The comparison pairs the local model's optimized scores with the API model's baseline by example. "API" is
    what the registry says a model is (`api` column), not its provider's name.
    """
    done = optimized_runs(runs)
    rows = []
    index = ScoreIndex.of(examples)
    rule = Rule(margin_pp)
    for (task, optimizer), group in done.groupby(["task", "optimizer"]):
        api, local = group[group["api"]], group[~group["api"]]
        if api.empty or local.empty:
            continue
        best_api = api.loc[api["baseline_score"].idxmax()]
        best_local = local.loc[local["optimized_score"].idxmax()]
        d = rule.compare(*index.pairs(best_api.run_id, "baseline", best_local.run_id, "optimized"))
        rows.append(
            {
                "task": task,
                "optimizer": optimizer,
                "api_model": best_api.model,
                "api_baseline": best_api.baseline_score,
                "local_model": best_local.model,
                "local_optimized": best_local.optimized_score,
                "gap_pp": best_local.optimized_score - best_api.baseline_score,
                "ci_low": d.ci_low,
                "ci_high": d.ci_high,
                "p_value": d.p_value,
                "test": pair_test(d, best_api, best_local),
                "margin_pp": margin_pp,
                "verdict": rule.verdict(d),
            }
        )
    return pd.DataFrame(rows)


def local_beats_api(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 4: (task, local, API) where the optimized local model scores above the optimized API model.

    The swing is how much the gap moved through optimization: (local − API) after minus (local − API) before.
    """
    done = optimized_runs(runs)[["task", "optimizer", "model", "api", "baseline_score", "optimized_score"]]
    api, local = done[done["api"]], done[~done["api"]]
    pairs = local.merge(api, on=["task", "optimizer"], suffixes=("_local", "_api"))
    pairs = pairs[pairs["optimized_score_local"] > pairs["optimized_score_api"]]
    before = pairs["baseline_score_local"] - pairs["baseline_score_api"]
    after = pairs["optimized_score_local"] - pairs["optimized_score_api"]
    table = pd.DataFrame(
        {
            "task": pairs["task"],
            "optimizer": pairs["optimizer"],
            "local_model": pairs["model_local"],
            "api_model": pairs["model_api"],
            "gap_before_pp": before,
            "gap_after_pp": after,
            "swing_pp": after - before,
        }
    )
    return table.sort_values(["task", "optimizer", "swing_pp"], ascending=[True, True, False]).reset_index(drop=True)


def ablation_effects(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 7 (phase 3): instruction effect = score(k=0) − baseline; demo effect(k) = score(k) − score(k=0)."""
    abl = _done(runs)
    abl = abl[abl["optimizer"].isin(ABLATING)]
    rows = []
    for run in abl.itertuples():
        k0 = getattr(run, score_k(0), np.nan)
        instruction = k0 - run.baseline_score
        demo = {f"demo_effect_k{k}": getattr(run, score_k(k), np.nan) - k0 for k in ABLATION_KS if k > 0}
        best_demo = np.nanmax(list(demo.values())) if demo else np.nan
        floor = noise_floor_pp(int(run.n_eval)) / 2 if pd.notna(run.n_eval) else np.nan
        if abs(instruction) < floor and (np.isnan(best_demo) or abs(best_demo) < floor):
            diagnosis = "within noise"
        elif np.isnan(best_demo) or abs(instruction) >= abs(best_demo):
            diagnosis = "instruction-driven" if instruction > 0 else "instruction hurts"
        else:
            diagnosis = "demo-driven" if best_demo > 0 else "demos hurt"
        rows.append(
            {"task": run.task, "model": run.model, "instruction_effect_pp": instruction, **demo, "diagnosis": diagnosis}
        )
    return pd.DataFrame(rows)


def reasoning_table(runs: pd.DataFrame, reasoning_models: set[str]) -> pd.DataFrame:
    """Table 8 (phase 4's design): unoptimized score and latency of each reasoning model (registry
    `reasoning: true`) per task, whatever grid or phase ran it."""
    done = _done(runs)
    done = done[done["optimizer"].isin(BASELINE_ONLY) & done["model"].isin(reasoning_models)]
    cols = ["model", "task", "baseline_score", "latency_ms_p50", "latency_ms_p95"]
    return done[cols].sort_values(["model", "task"]).reset_index(drop=True)


LOW_DATA_SERIES = ["model", "task", "optimizer", "teacher", "seed"]
"""Runs that agree on these and differ in `n_labeled` form one low-data curve."""


def low_data_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 9 (phase 5's design): score by n labeled, with the outcome (responsive, resistant or broken), for every
    series of optimizer runs that differ only in `n_labeled` — whatever grid or phase ran them."""
    cols = ["model", "task", "optimizer", "n_labeled", "baseline", "optimized", "delta_pp", "outcome"]
    ran = runs[runs["status"].isin((*DONE, "errored")) & runs["optimizer"].isin(COMPILING)]
    ran = ran.assign(teacher=ran["teacher"].fillna(ran["model"]))
    sizes = ran.groupby(LOW_DATA_SERIES, dropna=False)["n_labeled"].transform("nunique")
    rows = []
    for run in ran[sizes >= 2].itertuples():
        scored = getattr(run, "n_evaluated", np.nan)  # a sequential trial may have stopped before n_eval
        scored = run.n_eval if pd.isna(scored) else scored
        outcome = outcome_label(run.status, run.delta_pp, int(scored) if pd.notna(scored) else 0)
        rows.append(
            {
                "model": run.model,
                "task": run.task,
                "optimizer": run.optimizer,
                "n_labeled": run.n_labeled,
                "baseline": run.baseline_score,
                "optimized": run.optimized_score,
                "delta_pp": run.delta_pp,
                "outcome": outcome,
            }
        )
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "task", "n_labeled"]).reset_index(drop=True)


PAIR_POINT = ["model", "task", "n_labeled", "seed", "demos", "structured"]
"""Trials that agree on these and differ in optimizer ran on the same test examples: their optimizers compare."""


def optimizer_pairs(runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex) -> pd.DataFrame:
    """Optimizers side by side on the same point (model, task, n_labeled, seed, demos): each one's delta, the
    difference of their optimized scores with its paired 95% interval and p-value (`trainables.stats.paired`) over
    the same test examples, what each optimization cost (LM calls, USD) and which is better at what cost."""
    done = optimized_runs(runs)
    index = ScoreIndex.of(examples)
    rows = []
    for point, group in done.groupby(PAIR_POINT, dropna=False, sort=True):
        trials = group.sort_values("optimizer").drop_duplicates("optimizer")
        for i, a in enumerate(trials.itertuples()):
            for b in list(trials.itertuples())[i + 1 :]:
                d = paired_delta(*index.pairs(a.run_id, "optimized", b.run_id, "optimized"))
                calls_a, calls_b = _calls(a), _calls(b)
                rows.append(
                    {
                        "model": point[0],
                        "task": point[1],
                        "n_labeled": point[2],
                        "seed": point[3],
                        "a": a.optimizer,
                        "b": b.optimizer,
                        "delta_a_pp": a.delta_pp,
                        "delta_b_pp": b.delta_pp,
                        "n": d.n,
                        "b_minus_a_pp": d.delta_pp,
                        "ci_low": d.ci_low,
                        "ci_high": d.ci_high,
                        "p_value": d.p_value,
                        "test": pair_test(d, a, b),
                        "calls_a": calls_a,
                        "calls_b": calls_b,
                        "cost_a_usd": a.cost_usd,
                        "cost_b_usd": b.cost_usd,
                        "verdict": pair_verdict(a.optimizer, b.optimizer, d, calls_a, calls_b),
                    }
                )
    return pd.DataFrame(rows)


def _calls(run: object) -> float:
    """LM calls of a trial's optimization (all its calls for runs recorded before the split was logged)."""
    calls = getattr(run, "optimize_lm_calls", np.nan)
    return float(getattr(run, "lm_calls", np.nan) if pd.isna(calls) else calls)


def pair_verdict(a: str, b: str, d: PairedDelta, calls_a: float, calls_b: float) -> str:
    """Which optimizer is better (only where the paired test says so) and what its optimization cost against the
    other's, in LM calls."""
    if d.n == 0:
        return "no common test examples"
    if np.isnan(calls_a) or np.isnan(calls_b) or min(calls_a, calls_b) <= 0:
        cost = "calls unknown"
    else:
        cheaper, ratio = (a, calls_b / calls_a) if calls_a <= calls_b else (b, calls_a / calls_b)
        cost = f"{cheaper} used {ratio:.1f}× fewer calls" if ratio >= 1.05 else "about the same calls"
    if d.significant:
        return f"{b if d.delta_pp > 0 else a} better; {cost}"
    return f"no significant difference; {cost}"


def discordance_by_task(runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex) -> pd.DataFrame:
    """Per task, how often baseline and optimized disagree on an example (the mean squared per-example difference:
    for 0/1 scores, the share of examples that moved), over every done optimization trial of the task: what the
    power of a paired test on that task depends on (`arb plan`)."""
    index = ScoreIndex.of(examples)
    rows = []
    for task, group in optimized_runs(runs).groupby("task"):
        diffs = [b - a for a, b in (index.pairs(r, "baseline", r, "optimized") for r in group["run_id"])]
        d = np.concatenate(diffs) if diffs else np.array([])
        if len(d):
            rows.append({"task": task, "discordance": float(np.mean(d**2)), "runs": len(group), "examples": len(d)})
    return pd.DataFrame(rows, columns=["task", "discordance", "runs", "examples"]).set_index("task")


def routing_discordance(runs: pd.DataFrame, examples: pd.DataFrame | ScoreIndex) -> pd.DataFrame:
    """Per task, how often a cheaper model's optimized program and the best API model's disagree on an example
    (mean squared per-example difference, pooled over the task's non-API models): what the examples a
    non-inferiority decision needs depend on (`arb plan`)."""
    index = ScoreIndex.of(examples)
    rows = []
    for task, group in optimized_runs(runs).groupby("task"):
        api, local = group[group["api"]], group[~group["api"]]
        if api.empty or local.empty:
            continue
        ref = api.loc[api["optimized_score"].idxmax()]
        diffs = [b - a for a, b in (index.pairs(ref.run_id, "optimized", r, "optimized") for r in local["run_id"])]
        d = np.concatenate(diffs) if diffs else np.array([])
        if len(d):
            rows.append({"task": task, "discordance": float(np.mean(d**2)), "runs": len(local), "examples": len(d)})
    return pd.DataFrame(rows, columns=["task", "discordance", "runs", "examples"]).set_index("task")
