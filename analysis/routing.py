"""Routing advice: per task, the cheapest model whose optimized score is not significantly below the best API model.

"Not significantly below" is the paired test on the same test examples (`trainables.stats.paired_delta`): a
candidate qualifies unless its score is lower with p < 0.05 and a CI entirely below zero. Cost and latency per
1,000 calls come from the per-example tokens and latencies of the optimized program, priced by the registry.
"""

from __future__ import annotations

import pandas as pd

from analysis.tables import ScoreIndex, _optimized
from trainables.registry import ModelRegistry
from trainables.stats import paired_delta

NOT_ENOUGH_DATA = "not enough data"
ROUTING_COLUMNS = ["task", "reference_api", "reference_score", "route_to", "route_score", "gap_pp", "gap_ci_low",
                   "gap_ci_high", "usd_per_1k", "reference_usd_per_1k", "latency_s_per_1k",
                   "reference_latency_s_per_1k", "comparable"]  # fmt: skip


def per_call_costs(runs: pd.DataFrame, examples: pd.DataFrame, registry: ModelRegistry) -> pd.DataFrame:
    """Per optimized run: USD and seconds per 1,000 calls of the optimized program."""
    opt = examples[examples["condition"] == "optimized"]
    means = opt.groupby("run_id")[["prompt_tokens", "completion_tokens", "latency_ms"]].mean()
    rows = []
    for run in _optimized(runs).itertuples():
        if run.run_id not in means.index or run.model not in registry.models:
            continue
        m = means.loc[run.run_id]
        entry = registry.models[run.model]
        usd = entry.cost_usd(int(m.prompt_tokens * 1000), int(m.completion_tokens * 1000), m.latency_ms)
        rows.append(
            {"run_id": run.run_id, "usd_per_1k": usd, "latency_s_per_1k": m.latency_ms}
        )  # ms each × 1000 / 1000
    return pd.DataFrame(rows, columns=["run_id", "usd_per_1k", "latency_s_per_1k"])


def routing_advice(
    runs: pd.DataFrame,
    examples: pd.DataFrame,
    registry: ModelRegistry,
    index: ScoreIndex | None = None,
    costs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per task: the reference API model, the model to route to, and what that saves.

    Only models with per-example results paired to the reference's can be picked; `comparable` counts them. A task
    where none can be compared is routed to "not enough data", never to a model on its aggregate score alone.

    `index` and `costs` (from `per_call_costs`) may be passed in when the caller already built them.
    """
    costs = per_call_costs(runs, examples, registry) if costs is None else costs
    done = _optimized(runs).merge(costs, on="run_id", how="left")
    rows = []
    index = index or ScoreIndex(examples)
    for task, group in done.groupby("task"):
        api = group[group["provider"] == "openai"]
        if api.empty:
            continue
        ref = api.loc[api["optimized_score"].idxmax()]
        qualified, compared = [], 0
        for cand in group.itertuples():
            if cand.run_id == ref.run_id:
                d = paired_delta(*index.pairs(ref.run_id, "optimized", ref.run_id, "optimized"))
                qualified.append((cand.usd_per_1k, cand.latency_s_per_1k, cand, d))
                continue
            d = paired_delta(*index.pairs(ref.run_id, "optimized", cand.run_id, "optimized"))
            if d.n == 0:
                continue  # no shared examples: no evidence that it is not worse, so it is never a pick
            compared += 1
            if not (d.significant and d.delta_pp < 0):
                qualified.append((cand.usd_per_1k, cand.latency_s_per_1k, cand, d))
        row = {"task": task, "reference_api": ref.model, "reference_score": ref.optimized_score,
               "reference_usd_per_1k": ref.usd_per_1k, "reference_latency_s_per_1k": ref.latency_s_per_1k}  # fmt: skip
        if compared == 0 and len(group) > 1:
            # Nothing could be paired with the reference (runs without per-example results): routing to a model
            # on its aggregate score alone could pick one that is worse, so say so instead.
            rows.append({**row, "route_to": NOT_ENOUGH_DATA, "comparable": 0})
            continue
        cost, latency, pick, d = min(qualified, key=lambda q: (q[0], q[1]))
        rows.append(
            {
                **row,
                "route_to": pick.model,
                "route_score": pick.optimized_score,
                "gap_pp": d.delta_pp,
                "gap_ci_low": d.ci_low,
                "gap_ci_high": d.ci_high,
                "usd_per_1k": cost,
                "latency_s_per_1k": latency,
                "comparable": compared,
            }
        )
    return pd.DataFrame(rows, columns=ROUTING_COLUMNS)
