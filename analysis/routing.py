"""Routing advice: per task, the cheapest program shown non-inferior to a reference API model, or the reference.

The rule is `trainables.stats.noninferiority`'s, the same one `arb route` races with: a candidate is routed to only when
the lower end of its interval for (candidate − reference), on the same test examples, lies above −margin, with
the error rate split over the task's candidates (Bonferroni). A task says one of: route to M, keep the reference
(every cheaper candidate shown more than the margin worse), or undecided (with an estimate of the examples that
would decide it). Cost and latency per 1,000 calls come from the per-example tokens and latencies of the
optimized program, priced by the registry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.tables import ScoreIndex, optimized_runs
from trainables.errors import ArbError
from trainables.registry import ModelRegistry
from trainables.stats.noninferiority import MARGIN_PP, Candidate, Rule, decide, spread_of

NOT_ENOUGH_DATA = "not enough data"
ROUTING_COLUMNS = ["task", "reference", "reference_score", "decision", "route_to", "route_score", "gap_pp",
                   "gap_ci_low", "gap_ci_high", "margin_pp", "confidence", "candidates", "more_examples",
                   "usd_per_1k", "reference_usd_per_1k", "latency_s_per_1k", "reference_latency_s_per_1k",
                   "comparable", "why"]  # fmt: skip


def per_call_costs(runs: pd.DataFrame, examples: pd.DataFrame, registry: ModelRegistry) -> pd.DataFrame:
    """Per optimized run: USD and seconds per 1,000 calls of the optimized program. An API model costs its
    tokens; a local model its GPU time at the registry's `gpu_hour_usd`: the measured seconds per call shared by the
    requests that were in flight at once (`eval_in_flight`, 1 for runs recorded before it), so a server that
    answers 16 at a time costs a sixteenth of a call's latency per call."""
    opt = examples[examples["condition"] == "optimized"]
    means = opt.groupby("run_id")[["prompt_tokens", "completion_tokens", "latency_ms"]].mean()
    rows = []
    for run in optimized_runs(runs).itertuples():
        if run.run_id not in means.index or run.model not in registry.models:
            continue
        m = means.loc[run.run_id]
        entry = registry.models[run.model]
        shared = getattr(run, "eval_in_flight", 1.0)
        shared = 1.0 if pd.isna(shared) or shared < 1 else float(shared)
        # mean ms per call × 1,000 calls = seconds per 1,000 calls, of which the GPU spent 1/shared on each
        usd = entry.cost_usd(int(m.prompt_tokens * 1000), int(m.completion_tokens * 1000), m.latency_ms / shared)
        rows.append(
            {"run_id": run.run_id, "usd_per_1k": usd, "latency_s_per_1k": m.latency_ms}
        )  # ms each × 1000 / 1000
    return pd.DataFrame(rows, columns=["run_id", "usd_per_1k", "latency_s_per_1k"])


def _cheaper(cand: Any, ref: Any) -> bool:
    """Whether routing to `cand` could save anything against `ref`: a lower price per call, or, where a price is
    unknown, not an API model (local GPU time is priced at 0 unless the registry says otherwise)."""
    if pd.isna(cand.usd_per_1k) or pd.isna(ref.usd_per_1k):
        return not bool(cand.api)
    return bool(cand.usd_per_1k < ref.usd_per_1k)


CANDIDATE_COLUMNS = ["task", "program", "model", "reference", "score", "usd_per_1k", "gap_pp", "ci_low", "ci_high",
                     "n", "verdict", "chosen"]  # fmt: skip


def routing_advice(
    runs: pd.DataFrame,
    examples: pd.DataFrame,
    registry: ModelRegistry,
    index: ScoreIndex | None = None,
    costs: pd.DataFrame | None = None,
    margin_pp: float = MARGIN_PP,
    reference: str | None = None,
) -> pd.DataFrame:
    """One row per task: the routing decision (`routing_tables`' first table)."""
    return routing_tables(runs, examples, registry, index, costs, margin_pp, reference)[0]


def routing_tables(
    runs: pd.DataFrame,
    examples: pd.DataFrame,
    registry: ModelRegistry,
    index: ScoreIndex | None = None,
    costs: pd.DataFrame | None = None,
    margin_pp: float = MARGIN_PP,
    reference: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(advice, candidates). Advice: one row per task: the reference, the decision (`route`, `keep reference`,
    `undecided`, `not enough data`), the model traffic goes to, its gap to the reference with the interval the
    decision was read from, and what it saves.

    `reference` names the model to replace (default: the best API model of each task by optimized score; `api`
    is the registry's word, `ModelEntry.is_api`). Candidates are the other optimized programs of the task that
    cost less per call; only those with per-example results paired to the reference's count (`comparable`).
    `index` and `costs` (from `per_call_costs`) may be passed in when the caller already built them.
    Candidates: one row per compared program, with its gap's interval and verdict (the cost–quality chart).
    """
    costs = per_call_costs(runs, examples, registry) if costs is None else costs
    done = optimized_runs(runs).merge(costs, on="run_id", how="left")
    if reference is not None and reference not in set(done["model"]):
        known = ", ".join(sorted(set(done["model"]))) or "none"
        raise ArbError(f"reference model {reference!r} has no optimized run in these grids",
                       f"name one of: {known}")  # fmt: skip
    rows, per_candidate = [], []
    index = index or ScoreIndex(examples)
    for task, group in done.groupby("task"):
        field = contenders(group, reference)
        if field is None:
            continue
        ref, others = field
        rule = Rule(margin_pp, candidates=len(others))
        paired = []
        for cand in others:
            a, b = index.pairs(ref.run_id, "optimized", cand.run_id, "optimized")
            if len(a) == 0:
                continue  # no shared examples: no evidence either way, so it is never a pick
            name = program_name(cand, group)
            paired.append(Candidate(name, _num(cand.usd_per_1k), _num(cand.latency_s_per_1k),
                                    rule.compare(a, b), spread_of(a, b)))  # fmt: skip
        row = {"task": task, "reference": ref.model, "reference_score": ref.optimized_score,
               "reference_usd_per_1k": ref.usd_per_1k, "reference_latency_s_per_1k": ref.latency_s_per_1k,
               "margin_pp": margin_pp, "confidence": rule.confidence, "candidates": len(others),
               "comparable": len(paired)}  # fmt: skip
        if others and not paired:
            # Nothing could be paired with the reference (runs without per-example results): routing to a model
            # on its aggregate score alone could pick one that is worse, so say so instead.
            rows.append({**row, "decision": NOT_ENOUGH_DATA, "route_to": NOT_ENOUGH_DATA,
                         "why": f"no candidate shares test examples with {ref.model}"})  # fmt: skip
            continue
        decision = decide(rule, ref.model, paired)
        if not others:
            decision_kind, why = "keep reference", f"keep {ref.model}: no cheaper model ran this task"
        else:
            decision_kind, why = decision.kind, decision.words
        chosen = decision.chosen
        by_name = {program_name(c, group): c for c in others}
        pick = by_name[chosen.name] if chosen else ref
        per_candidate += [
            {"task": task, "program": c.name, "model": by_name[c.name].model, "reference": ref.model,
             "score": by_name[c.name].optimized_score, "usd_per_1k": c.usd_per_1k, "gap_pp": c.delta.delta_pp,
             "ci_low": c.delta.ci_low, "ci_high": c.delta.ci_high, "n": c.delta.n, "verdict": rule.verdict(c.delta),
             "chosen": chosen is not None and c.name == chosen.name}
            for c in paired
        ]  # fmt: skip
        per_candidate.append({"task": task, "program": ref.model, "model": ref.model, "reference": ref.model,
                              "score": ref.optimized_score, "usd_per_1k": ref.usd_per_1k, "gap_pp": 0.0,
                              "ci_low": 0.0, "ci_high": 0.0, "n": math.nan, "verdict": "reference",
                              "chosen": chosen is None})  # fmt: skip
        rows.append(
            {
                **row,
                "decision": decision_kind,
                "route_to": pick.model,
                "route_score": pick.optimized_score,
                "gap_pp": chosen.delta.delta_pp if chosen else math.nan,
                "gap_ci_low": chosen.delta.ci_low if chosen else math.nan,
                "gap_ci_high": chosen.delta.ci_high if chosen else math.nan,
                "more_examples": decision.more_examples,
                "usd_per_1k": pick.usd_per_1k,
                "latency_s_per_1k": pick.latency_s_per_1k,
                "why": why,
            }
        )
    return pd.DataFrame(rows, columns=ROUTING_COLUMNS), pd.DataFrame(per_candidate, columns=CANDIDATE_COLUMNS)


def contenders(group: pd.DataFrame, reference: str | None = None) -> tuple[Any, list[Any]] | None:
    """One task's optimized runs (with `api`, `usd_per_1k`): the reference run (the named model's best, else the
    best API model's, by optimized score) and the runs that could replace it (the cheaper ones); None without a
    reference."""
    pool = group[group["model"] == reference] if reference else group[group["api"]]
    if pool.empty:
        return None
    ref = pool.loc[pool["optimized_score"].idxmax()]
    return ref, [c for c in group.itertuples() if c.run_id != ref.run_id and _cheaper(c, ref)]


def program_name(run: Any, group: pd.DataFrame) -> str:
    """A candidate's name: its model, with the optimizer when the task has several programs of that model."""
    model = str(run.model)
    if int((group["model"] == model).sum()) > 1:
        return f"{model} ({run.optimizer}, n{run.n_labeled})"
    return model


def _num(value: object) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]


def gateway_config(advice: pd.DataFrame, registry: ModelRegistry, prefix: str = "arb") -> dict[str, object]:
    """A LiteLLM proxy config (`litellm --config FILE`) that routes each task to its chosen model: one entry
    `model_name: <prefix>/<task>` per task, so a service asks for "the model for task T" by name and the study's
    decision changes what answers. Format: LiteLLM's config.yaml (`model_list` of `model_name` +
    `litellm_params` {model, api_base, api_key}), docs.litellm.ai/docs/proxy/configs. API keys are written as
    `os.environ/VAR`, LiteLLM's reference to an environment variable, never as values."""
    entries = []
    for row in advice.itertuples():
        if row.route_to == NOT_ENOUGH_DATA or pd.isna(row.route_to):
            continue
        model = str(row.route_to)
        entry = registry.models.get(model)
        if entry is None:
            continue
        params: dict[str, object] = {"model": f"{entry.provider_spec.litellm_prefix}/{entry.id}"}
        endpoint = entry.resolved_endpoint()
        if endpoint:
            params["api_base"] = endpoint
        if entry.api_key_env:
            params["api_key"] = f"os.environ/{entry.api_key_env}"
        info = {"arb_decision": str(row.decision), "arb_reference": str(row.reference), "arb_model": model}
        entries.append({"model_name": f"{prefix}/{row.task}", "litellm_params": params, "model_info": info})
    return {"model_list": entries}


def write_gateway_config(advice: pd.DataFrame, registry: ModelRegistry, path: Path) -> Path:
    """Write `gateway_config` as YAML to `path`."""
    path.write_text(
        "# LiteLLM proxy config written by arb from the routing decisions: `litellm --config "
        + path.name
        + "`\n"
        + yaml.safe_dump(gateway_config(advice, registry), sort_keys=False)
    )
    return path
