"""The routing rule (non-inferiority at a margin, Bonferroni over a task's candidates), as the report applies it,
and the race that adds examples where a decision is open (`trainables.stats.race`, on outcomes known in advance)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from synthetic import _row, binary, paired_examples

from analysis import tables
from analysis.routing import gateway_config, routing_advice
from analysis.runs import mark_api, typed_runs
from grid.cli import MARGIN_DEFAULT
from trainables.registry import ModelRegistry, load_registry
from trainables.stats.noninferiority import MARGIN_PP, Candidate, Rule, decide
from trainables.stats.race import Entrant, RaceRule, simulate


def _math_store(local_only: int, api_only: int, n: int = 50, both: int = 32) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Phase-1 runs of math: gpt-4o and llama3.2, optimized outcomes paired by example; `api_only` examples only
    gpt-4o got right, `local_only` only llama3.2 did. gpt-4o's baseline is its optimized program's outcomes (so
    table 2, API baseline against local optimized, asks the routing table's question)."""
    neither = n - both - local_only - api_only
    api = [1.0] * both + [1.0] * api_only + [0.0] * local_only + [0.0] * neither
    local = [1.0] * both + [0.0] * api_only + [1.0] * local_only + [0.0] * neither
    rows, frames = [], []
    for model, scores in (("gpt-4o", api), ("llama3.2", local)):
        run_id = f"math-{model}"
        rows.append(_row(run_id, model, "math", 50.0, 100 * float(np.mean(scores))))
        frames.append(paired_examples(run_id, api if model == "gpt-4o" else binary(n, n // 2), scores))
    return typed_runs(rows), pd.concat(frames, ignore_index=True)


def test_a_model_10pp_worse_at_n50_is_not_routed_to() -> None:
    # The store: 8 examples only gpt-4o got right, 3 only the local model; the old rule routed math to it.
    runs, examples = _math_store(local_only=3, api_only=8)
    row = routing_advice(runs, examples, load_registry()).set_index("task").loc["math"]
    assert row["route_to"] == "gpt-4o" and row["decision"] == "undecided"
    assert row["why"].startswith("undecided at n = 50: keep gpt-4o for now")
    assert row["more_examples"] > 50  # the estimate says more data would decide it
    # table 2 says the same thing in the same words
    gap = tables.api_vs_best_local(runs, examples).set_index("task").loc["math"]
    assert gap["verdict"] == "undecided" and gap["margin_pp"] == MARGIN_PP


def test_a_model_at_least_as_good_is_routed_to_with_its_guarantee() -> None:
    runs, examples = _math_store(local_only=2, api_only=0, n=200, both=150)
    row = routing_advice(runs, examples, load_registry()).set_index("task").loc["math"]
    assert row["decision"] == "route" and row["route_to"] == "llama3.2"
    assert row["gap_ci_low"] > -MARGIN_PP and row["why"].startswith("route to llama3.2: at 95% confidence")
    gap = tables.api_vs_best_local(runs, examples).set_index("task").loc["math"]
    assert gap["verdict"] == "non-inferior"


def test_a_clearly_worse_model_keeps_the_reference() -> None:
    runs, examples = _math_store(local_only=0, api_only=20, n=100, both=40)
    row = routing_advice(runs, examples, load_registry()).set_index("task").loc["math"]
    assert row["decision"] == "keep reference" and row["route_to"] == "gpt-4o"
    assert row["why"] == "keep gpt-4o: every cheaper candidate is more than 5 pp worse at 95% confidence"


def test_margin_changes_the_decision_and_is_printed() -> None:
    # 4 pp worse on 400 examples (interval about −6.4 to −1.6): non-inferior at 10 pp, worse at 1 pp
    runs, examples = _math_store(local_only=4, api_only=20, n=400, both=300)
    wide = routing_advice(runs, examples, load_registry(), margin_pp=10.0).set_index("task").loc["math"]
    narrow = routing_advice(runs, examples, load_registry(), margin_pp=1.0).set_index("task").loc["math"]
    assert (wide["decision"], wide["margin_pp"]) == ("route", 10.0)
    assert (narrow["decision"], narrow["margin_pp"]) == ("keep reference", 1.0)
    assert MARGIN_DEFAULT == MARGIN_PP


def test_api_is_what_the_registry_entry_is_not_its_provider() -> None:
    shipped = load_registry().models
    priced_local = shipped["qwen-coder-1.5b"].model_copy(update={"input_usd_per_mtok": 0.5})
    registry = ModelRegistry(models={**shipped, "qwen-coder-1.5b": priced_local})
    assert shipped["gpt-4o"].is_api and not shipped["llama3.2"].is_api and not shipped["qwen-coder-1.5b"].is_api
    assert registry.models["qwen-coder-1.5b"].is_api  # an embedded model priced per token stands in for an API one
    rows = [_row("a", "qwen-coder-1.5b", "math", 50.0, 80.0), _row("b", "smollm2", "math", 50.0, 80.0)]
    runs = mark_api(typed_runs(rows), registry)
    assert runs.set_index("model")["api"].to_dict() == {"qwen-coder-1.5b": True, "smollm2": False}
    examples = pd.concat([paired_examples("a", binary(300, 150), binary(300, 240)),
                          paired_examples("b", binary(300, 150), binary(300, 240))])  # fmt: skip
    advice = routing_advice(runs, examples, registry).set_index("task")
    assert advice.loc["math", "reference"] == "qwen-coder-1.5b" and advice.loc["math", "route_to"] == "smollm2"


def test_reference_can_be_named() -> None:
    runs, examples = _math_store(local_only=2, api_only=0, n=200, both=150)
    advice = routing_advice(runs, examples, load_registry(), reference="gpt-4o").set_index("task")
    assert advice.loc["math", "reference"] == "gpt-4o"
    with pytest.raises(Exception, match="reference model 'phi4' has no optimized run"):
        routing_advice(runs, examples, load_registry(), reference="phi4")


def test_bonferroni_widens_each_interval_with_the_number_of_candidates() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random(200) < 0.7).astype(float), (rng.random(200) < 0.7).astype(float)
    one, four = Rule(5.0).compare(a, b), Rule(5.0, candidates=4).compare(a, b)
    assert four.ci_low < one.ci_low and four.ci_high > one.ci_high
    assert Rule(5.0, candidates=4).confidence == "95% (Bonferroni over 4)"


def test_examples_needed_matches_the_normal_formula() -> None:
    # one-sided 95% (alpha 0.1 two-sided): n ≈ 1,082 × discordance for an even chance, 2,473 × for 80% power
    rule = Rule(5.0, alpha=0.1)
    assert rule.examples_needed(0.10) == pytest.approx(108, abs=2)
    assert rule.examples_needed(0.10, power=0.8) == pytest.approx(248, abs=3)
    assert math.isinf(rule.examples_needed(0.1, true_gap_pp=-5.0))


def test_cheapest_non_inferior_wins_and_a_cheaper_open_one_is_named() -> None:
    rule = Rule(5.0, candidates=2)
    ok = Rule(5.0, candidates=2).compare(np.ones(100), np.ones(100))
    open_ = Rule(5.0, candidates=2).compare(np.array(binary(20, 10)), np.array(binary(20, 9)))
    d = decide(rule, "gpt-4o", [Candidate("phi4", 2.0, 0.0, ok), Candidate("llama3.2", 1.0, 0.0, open_, 0.3)])
    assert d.kind == "route" and d.model == "phi4" and d.words.endswith("cheaper llama3.2 still undecided")


def test_gateway_config_routes_each_task_by_name_and_never_holds_a_key() -> None:
    runs, examples = _math_store(local_only=2, api_only=0, n=200, both=150)
    config = gateway_config(routing_advice(runs, examples, load_registry()), load_registry())
    (entry,) = config["model_list"]  # type: ignore[misc]
    assert entry["model_name"] == "arb/math" and entry["litellm_params"]["model"] == "ollama_chat/llama3.2"
    kept, kex = _math_store(local_only=0, api_only=20, n=100, both=40)
    (api,) = gateway_config(routing_advice(kept, kex, load_registry()), load_registry())["model_list"]  # type: ignore[misc]
    assert api["litellm_params"] == {"model": "openai/gpt-4o", "api_base": "https://api.openai.com/v1",
                                     "api_key": "os.environ/OPENAI_API_KEY"}  # fmt: skip


# --- the race, on outcomes known in advance ---------------------------------------------------------------------


def _outcomes(n: int, ref_rate: float, gaps: dict[str, float], seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reference outcomes, and per candidate outcomes that copy the reference except where they are flipped to
    make the planted gap (the more models share, the faster a paired race decides)."""
    rng = np.random.default_rng(seed)
    ref = (rng.random(n) < ref_rate).astype(float)
    out = {}
    for name, gap in gaps.items():
        cand = ref.copy()
        flip = rng.random(n)
        if gap < 0:
            cand[(ref == 1) & (flip < -gap / ref_rate + 0.05)] = 0.0
            cand[(ref == 0) & (flip < 0.05 * ref_rate / (1 - ref_rate))] = 1.0
        else:
            cand[(ref == 0) & (flip < 0.05)] = 1.0
        out[name] = cand
    return ref, out


def test_race_routes_to_a_planted_non_inferior_cheap_model() -> None:
    ref, out = _outcomes(500, 0.7, {"cheap": 0.0, "dear": 0.0}, seed=1)
    entrants = [Entrant("cheap", 0.1), Entrant("dear", 0.5)]
    state = simulate(RaceRule(n_max=500), entrants, ref, out, start=50)
    assert state.decision is not None and state.decision.kind == "route" and state.decision.model == "cheap"
    assert state.calls["cheap"] < 500  # decided before n_max
    assert state.calls["dear"] <= state.calls["cheap"]  # the dearer one left once the cheaper was shown good


def test_race_eliminates_a_planted_worse_model_early() -> None:
    ref, out = _outcomes(500, 0.7, {"bad": -0.3, "good": 0.0}, seed=2)
    entrants = [Entrant("bad", 0.1), Entrant("good", 0.5)]
    state = simulate(RaceRule(n_max=500), entrants, ref, out, start=50)
    assert state.standings["bad"].verdict == "worse than margin" and state.calls["bad"] <= 100
    assert state.decision is not None and state.decision.model == "good"


def test_a_null_race_runs_to_n_max_and_says_undecided() -> None:
    # a candidate exactly at the margin can be shown neither non-inferior nor worse
    ref, out = _outcomes(300, 0.7, {"edge": -0.05}, seed=4)
    state = simulate(RaceRule(n_max=300), [Entrant("edge", 0.1)], ref, out, start=50)
    assert state.decision is not None and state.decision.kind == "undecided"
    assert state.calls == {"reference": 300, "edge": 300}
    assert state.decision.words.startswith("undecided at n = 300") and state.decision.model == "reference"


def test_the_race_sequence_holds_its_level_at_the_margin_however_often_it_looks() -> None:
    # A candidate exactly δ = 5 pp worse (ups 10%, downs 15%): the race's sequence (aGRAPA bets, looked at after
    # every example) may call it non-inferior at most α/2 of the time, and covers the true gap at every look.
    from trainables.stats.sequential import RunningSequence

    rng = np.random.default_rng(5)
    paths, n, routed, missed = 400, 300, 0, 0
    for _ in range(paths):
        u = rng.random(n)
        diffs = np.where(u < 0.10, 1.0, np.where(u < 0.25, -1.0, 0.0))
        looks = RunningSequence(0.05, bets="grapa").extend(diffs)
        routed += any(look.ci_low > -5.0 for look in looks)
        missed += any(not (look.ci_low <= -5.0 <= look.ci_high) for look in looks)
    assert routed / paths <= 0.025 + 0.01 and missed / paths <= 0.05
    # and it is not vacuous: an equally good candidate that disagrees on 10% of examples is shown non-inferior
    # within 600 examples most of the time (a fixed-n test would need about 150)
    shown = 0
    for _ in range(50):
        u = rng.random(600)
        diffs = np.where(u < 0.05, 1.0, np.where(u < 0.10, -1.0, 0.0))
        shown += RunningSequence(0.05, bets="grapa").extend(diffs)[-1].ci_low > -5.0
    assert shown >= 40
