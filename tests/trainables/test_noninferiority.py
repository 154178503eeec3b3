"""The routing rule (non-inferiority at a margin, Bonferroni over a task's candidates), as the report applies it,
and the race that adds examples where a decision is open (`trainables.stats.race`, on outcomes known in advance)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from synthetic import _row, binary, paired_examples

from analysis import tables
from analysis.routing import gateway_config, routing_advice
from analysis.runs import mark_api, typed_runs
from grid.cli import MARGIN_DEFAULT
from trainables.registry import ModelRegistry, load_registry
from trainables.stats.noninferiority import MARGIN_PP, Candidate, Rule, decide, noninferior_power
from trainables.stats.paired import paired_delta, tango_z
from trainables.stats.race import FINAL_SHARE, Entrant, MarginTests, Race, RaceRule, simulate


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


def test_examples_needed_is_the_power_of_the_reports_own_interval() -> None:
    # one-sided 95% (alpha 0.1 two-sided): the normal formula says n ≈ 1,082 × discordance for an even chance and
    # 2,473 × for 80% power; the exact power of the corrected Tango interval needs somewhat more
    rule = Rule(5.0, alpha=0.1)
    even, power = rule.examples_needed(0.10), rule.examples_needed(0.10, power=0.8)
    assert 108 <= even <= 170 and 248 <= power <= 320
    assert noninferior_power(int(power), 0.10, 0.0, 0.05, 0.1) >= 0.8
    assert noninferior_power(int(0.8 * power), 0.10, 0.0, 0.05, 0.1) < 0.8
    # and by simulation, the interval the report prints clears −5 pp that often at that n
    rng = np.random.default_rng(2)
    shown = 0
    for _ in range(400):
        u = rng.random(int(power))
        ref, cand = (u < 0.05).astype(float), ((u >= 0.05) & (u < 0.10)).astype(float)
        shown += rule.verdict(rule.compare(ref, cand)) == "non-inferior"
    assert shown / 400 >= 0.75
    assert math.isinf(rule.examples_needed(0.1, true_gap_pp=-5.0))
    assert math.isinf(rule.examples_needed(0.01, true_gap_pp=-3.0))  # a 3-pp gap needs at least 3% disagreement


def test_identical_columns_at_n50_are_not_evidence() -> None:
    # two models that never disagree on 50 examples: the old interval was [0, 0] and routed on it
    rule = Rule(5.0)
    same = rule.compare(np.array(binary(50, 40)), np.array(binary(50, 40)))
    assert rule.verdict(same) == "undecided" and same.ci_low < -5.0 < 5.0 < same.ci_high
    # Tango's interval without the continuity correction has the closed form ±z²/(n + z²) here: ±7.1 pp
    z2 = norm.ppf(0.975) ** 2
    assert float(tango_z(0, 0, 50, -z2 / (50 + z2), cc=0.0)) == pytest.approx(norm.ppf(0.975))
    # one disagreement in 20 (the candidate right once where the reference was not)
    one = rule.compare(np.zeros(20), np.r_[1.0, np.zeros(19)])
    assert rule.verdict(one) == "undecided" and one.ci_low < -10
    runs, examples = _math_store(local_only=0, api_only=0, n=50, both=40)
    row = routing_advice(runs, examples, load_registry()).set_index("task").loc["math"]
    assert row["decision"] == "undecided" and row["route_to"] == "gpt-4o"


def test_a_candidate_truly_within_the_margin_at_n400_is_routed_to() -> None:
    # disagreeing on 10% of 400 examples, as often up as down: the gap's interval is about ±3.3 pp
    runs, examples = _math_store(local_only=20, api_only=20, n=400, both=300)
    row = routing_advice(runs, examples, load_registry()).set_index("task").loc["math"]
    assert row["decision"] == "route" and row["route_to"] == "llama3.2"


def test_cheapest_non_inferior_wins_and_a_cheaper_open_one_is_named() -> None:
    rule = Rule(5.0, candidates=2)
    ok = Rule(5.0, candidates=2).compare(np.ones(400), np.ones(400))
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
    assert state.standings["bad"].verdict == "eliminated" and state.calls["bad"] <= 100
    assert state.decision is not None and state.decision.model == "good"


def test_a_null_race_runs_to_n_max_and_says_undecided() -> None:
    # a candidate exactly at the margin can be shown neither non-inferior nor worse
    ref, out = _outcomes(300, 0.7, {"edge": -0.05}, seed=4)
    state = simulate(RaceRule(n_max=300, zone_pp=0.0), [Entrant("edge", 0.1)], ref, out, start=50)
    assert state.decision is not None and state.decision.kind == "undecided"
    assert state.calls == {"reference": 300, "edge": 300}
    assert state.decision.words.startswith("undecided at n = 300") and state.decision.model == "reference"


def test_the_race_holds_its_level_at_the_margin_however_often_it_looks() -> None:
    # A candidate exactly δ = 5 pp worse (ups 10%, downs 15%): the race's test (aGRAPA bets, looked at after every
    # round) may call it non-inferior at most α/2 of the time (one candidate: no Bonferroni split).
    rng = np.random.default_rng(5)
    paths, n, routed = 400, 300, 0
    for _ in range(paths):
        u = rng.random(n)
        diffs = np.where(u < 0.10, 1.0, np.where(u < 0.25, -1.0, 0.0))
        tests = MarginTests(0.05, 0.02, 0.025, 0.025)
        for k in range(25, n + 1, 25):
            tests.extend(diffs[:k])
            if tests.low >= -0.05:
                routed += 1
                break
    assert routed / paths <= 0.025 + 0.01
    # and it is not vacuous: an equally good candidate that disagrees on 10% of examples is shown non-inferior
    # within 800 examples most of the time
    shown = 0
    for _ in range(50):
        u = rng.random(800)
        tests = MarginTests(0.05, 0.02, 0.025, 0.025)
        tests.extend(np.where(u < 0.05, 1.0, np.where(u < 0.10, -1.0, 0.0)))
        shown += tests.low >= -0.05
    assert shown >= 40


def test_the_margin_is_rejected_at_the_margin_itself() -> None:
    # the grid of candidate gaps holds −δ and −δ + ε exactly (before: 2·0.475 − 1 = −0.04999…, read as above −5 pp)
    tests = MarginTests(0.05, 0.02, 0.025, 0.025)
    assert -0.05 in tests.gaps and -0.03 in tests.gaps and len(tests.gaps) == 1999
    rng = np.random.default_rng(8)
    u = rng.random(2000)
    diffs = np.where(u < 0.05, 1.0, np.where(u < 0.10, -1.0, 0.0))
    race = Race(RaceRule(n_max=5000, batch=50), "reference", [Entrant("c", 1.0)])  # no look at the cap here
    verdicts = []
    for k in range(50, 2001, 50):
        s = race.standings(np.zeros(k), {"c": diffs[:k]})["c"]
        # the verdict is the printed lower end against −δ, and that end is a candidate gap the test rejected
        assert (s.verdict == "non-inferior") == (s.ci_low >= -5.0)
        assert s.ci_low == -100.0 or any(abs(100 * g - s.ci_low) < 1e-9 for g in race._tests["c"].gaps)
        verdicts.append(s.verdict)
    assert verdicts[0] == "undecided" and verdicts[-1] == "non-inferior"


def test_a_candidate_just_beyond_the_margin_leaves_the_race_early() -> None:
    # truly 6 pp worse: without a zone it would have to be shown below −5 pp, which a split of 3,000 rarely allows;
    # with ε = 2 pp it is eliminated (no better than −3 pp) long before the split runs out
    ref, out = _outcomes(3000, 0.7, {"edge": -0.06}, seed=4)
    state = simulate(RaceRule(n_max=3000), [Entrant("edge", 0.1)], ref, out, start=50)
    assert state.standings["edge"].verdict == "eliminated" and state.calls["edge"] < 3000
    assert state.decision is not None and state.decision.kind == "keep reference"
    assert "at least 3 pp worse" in state.decision.words


def test_a_candidate_that_scored_more_than_the_reference_is_not_scored_again() -> None:
    race = Race(RaceRule(n_max=500, batch=25), "reference", [Entrant("c", 1.0)])
    state = race.judge(np.zeros(50), {"c": np.r_[1.0, np.zeros(99)]})  # its trial scored 100, the reference 50
    step = race.next_round(state)
    assert len(step.candidates["c"]) == 0 and step.reference == range(50, 75)


def test_at_the_cap_the_race_also_reads_the_reports_fixed_n_interval() -> None:
    # 300 examples, 6% of them flipped: at the cap the race's lower end is the better of its sequence's and of the
    # pre-planned fixed-n look (half of the level, the report's Tango interval), and the verdict follows it
    rng = np.random.default_rng(3)
    ref = (rng.random(300) < 0.7).astype(float)
    cand = ref.copy()
    flips = rng.choice(300, size=18, replace=False)
    cand[flips] = 1 - cand[flips]
    race = Race(RaceRule(n_max=300), "reference", [Entrant("c", 1.0)])
    seq_only = MarginTests(0.05, 0.02, 0.025 * (1 - FINAL_SHARE), 0.05)
    seq_only.extend(cand - ref)
    s = race.standings(ref, {"c": cand})["c"]
    fixed = paired_delta(ref, cand, alpha=2 * FINAL_SHARE * 0.025)
    assert seq_only.low < -0.05 and s.ci_low == pytest.approx(max(100 * seq_only.low, fixed.ci_low))
    assert (s.verdict == "non-inferior") == (fixed.ci_low >= -5.0)
