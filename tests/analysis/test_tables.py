"""Analysis on synthetic runs whose right answers are known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from synthetic import DELTAS, REPORTED, TIERS, _row, binary, paired_examples, study_runs

from analysis import tables
from analysis.routing import routing_advice
from analysis.runs import typed_runs
from trainables.registry import load_registry
from trainables.stats.noninferiority import Rule
from trainables.stats.paired import delta_verdict, noise_floor_pp, paired_delta


def test_per_model_table_gives_back_the_study() -> None:
    summary = tables.per_model_summary(study_runs()).loc["mipro"]  # the study ran one optimizer
    for model, (delta, improved) in REPORTED.items():
        assert round(summary.loc[model, "delta_pp"], 1) == delta, model
        assert summary.loc[model, "improved"] == improved, model
        assert summary.loc[model, "tasks"] == 9
    assert list(summary.index) == list(REPORTED)  # ordered by average delta, as in the study


def test_delta_matrix_round_trips() -> None:
    matrix = tables.delta_matrix(study_runs()).loc["mipro"]
    for task, deltas in DELTAS.items():
        assert matrix.loc[task, ["llama3.2", "mistral", "phi4", "qwen2.5:7b", "gpt-4o", "gpt-5.2"]].tolist() == (
            pytest.approx(deltas)
        )


def test_tiers_are_the_study_tiers() -> None:
    tier_table = tables.tiers(study_runs()).loc["mipro"]
    got = {name: set(tier_table.index[tier_table["tier"] == name]) for name in TIERS}
    assert got == TIERS
    assert tier_table.loc["code", "std_pp"] == pytest.approx(np.std([0, 0, 0, 0, 0, -2]))


def test_demo_distribution() -> None:
    assert tables.demo_distribution(study_runs())["programs"].to_dict() == {0: 24, 5: 30}


def test_local_beats_api_with_swing() -> None:
    beats = tables.local_beats_api(study_runs())
    # math: qwen2.5:7b 51.7+36 = 87.7 beats gpt-5.2 68+8 = 76; before it trailed by 16.3, after it leads by 11.7
    row = beats[(beats.task == "math") & (beats.local_model == "qwen2.5:7b") & (beats.api_model == "gpt-5.2")]
    assert row["gap_before_pp"].item() == pytest.approx(-16.3)
    assert row["swing_pp"].item() == pytest.approx(28.0)
    # code: no local model improves, and all trail gpt-4o's baseline of 63.3: no local model beats gpt-4o there
    assert beats[(beats.task == "code") & (beats.api_model == "gpt-4o")].empty


PAIRED_CASES = [
    # (baseline right, optimized right, n, shuffled, significant, verdict)
    (0, 10, 50, False, True, "improved"),
    (10, 0, 50, False, True, "worse"),
    (20, 22, 50, False, False, "no significant change"),
    (25, 25, 50, False, False, "no significant change"),
]


@pytest.mark.parametrize(("a_right", "b_right", "n", "shuffled", "significant", "verdict"), PAIRED_CASES)
def test_paired_delta_cases(
    a_right: int, b_right: int, n: int, shuffled: bool, significant: bool, verdict: str
) -> None:
    d = paired_delta(np.array(binary(n, a_right)), np.array(binary(n, b_right)))
    assert d.delta_pp == pytest.approx(100 * (b_right - a_right) / n)
    assert d.ci_low <= d.delta_pp <= d.ci_high
    assert d.significant is significant and delta_verdict(d) == verdict


def test_mcnemar_counts_only_discordant_pairs() -> None:
    # 10 examples go up, none down: McNemar's corrected test, z = (|10 − 0| − 1) / √10
    d = paired_delta(np.zeros(50), np.array(binary(50, 10)))
    assert (d.up, d.down) == (10, 0) and d.p_value == pytest.approx(2 * norm.sf(9 / np.sqrt(10)))
    # same marginal scores but every example swaps: 10 up, 10 down, p = 1
    a = np.array([1.0] * 10 + [0.0] * 40)
    b = np.array([0.0] * 10 + [1.0] * 10 + [0.0] * 30)
    d = paired_delta(a, b)
    assert (d.up, d.down) == (10, 10) and d.p_value == pytest.approx(1.0) and d.delta_pp == 0


def test_paired_delta_rejects_misaligned_input() -> None:
    with pytest.raises(ValueError, match="equal"):
        paired_delta(np.zeros(3), np.zeros(4))


def test_noise_floor_at_study_size() -> None:
    assert noise_floor_pp(50) == pytest.approx(19.6, abs=0.05)
    assert noise_floor_pp(200) < noise_floor_pp(50)


def test_gap_verdicts_are_the_routing_rule() -> None:
    rule = Rule(5.0)
    equal = rule.compare(np.array(binary(400, 200)), np.array(binary(400, 200)))
    assert rule.verdict(equal) == "non-inferior"
    small = rule.compare(np.array(binary(10, 5)), np.array(binary(10, 5, np.random.default_rng(1))))
    assert rule.verdict(small) == "undecided"
    assert rule.verdict(rule.compare(np.ones(50), np.zeros(50))) == "worse than margin"


def _routing_fixture() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, frames = [], []
    # task "easy": the local model matches gpt-4o exactly on 400 examples -> route to the free local model (on 50
    # identical examples it would not be: see test_identical_columns_at_n50_are_not_evidence)
    # task "hard": the local model is far below -> stay on gpt-4o
    n = 400
    for task, local_right in (("easy", 320), ("hard", 80)):
        for model, right in (("llama3.2", local_right), ("gpt-4o", 320)):
            run_id = f"{task}-{model}"
            rows.append(_row(run_id, model, task, 50.0, 100 * right / n))
            frames.append(paired_examples(run_id, binary(n, n // 2), binary(n, right), latency_ms=200.0))
    return typed_runs(rows), pd.concat(frames, ignore_index=True)


def test_routing_picks_the_cheapest_model_shown_non_inferior() -> None:
    runs, examples = _routing_fixture()
    advice = routing_advice(runs, examples, load_registry()).set_index("task")
    # llama3.2: 200 ms per call, one in flight (no `eval_in_flight` recorded), at the registry's $3 per GPU-hour
    assert advice.loc["easy", "route_to"] == "llama3.2"
    assert advice.loc["easy", "usd_per_1k"] == pytest.approx(3.0 * 200.0 / 3600)
    assert advice.loc["easy", "decision"] == "route" and advice.loc["easy", "why"].startswith("route to llama3.2")
    assert advice.loc["hard", "route_to"] == "gpt-4o" and advice.loc["hard", "decision"] == "keep reference"
    # gpt-4o: 500 prompt + 50 completion tokens per call at $2.5 / $10 per 1M -> $1.75 per 1,000 calls
    assert advice.loc["easy", "reference_usd_per_1k"] == pytest.approx(1.75)
    assert advice.loc["easy", "latency_s_per_1k"] == pytest.approx(200.0)


def test_routing_without_per_example_results_says_not_enough_data() -> None:
    runs, examples = _routing_fixture()
    # "easy" keeps its examples; "hard" lost them (runs that errored before logging their table, or old runs)
    examples = examples[~examples["run_id"].str.startswith("hard")]
    advice = routing_advice(runs, examples, load_registry()).set_index("task")
    assert advice.loc["hard", "route_to"] == "not enough data" and advice.loc["hard", "comparable"] == 0
    assert pd.isna(advice.loc["hard", "gap_pp"])
    assert advice.loc["easy", "route_to"] == "llama3.2" and advice.loc["easy", "comparable"] == 1
    # a candidate without examples is never picked, even when it is the cheapest
    only_ref = examples[examples["run_id"] != "easy-llama3.2"]
    assert routing_advice(runs, only_ref, load_registry()).set_index("task").loc["easy", "route_to"] == (
        "not enough data"
    )


def test_low_data_outcomes() -> None:
    rows = [
        _row("a", "qwen3:4b", "math", 40.0, 70.0, n_labeled=8),
        _row("b", "qwen3:4b", "math", 40.0, 41.0, n_labeled=1),
        {**_row("c", "qwen3:4b", "math", 40.0, 40.0, n_labeled=0), "status": "compile_failed"},
    ]
    runs = typed_runs([{**r, "phase": "5", "optimizer": "bootstrap_rs"} for r in rows])
    low = tables.low_data_table(runs).set_index("n_labeled")
    assert low["outcome"].to_dict() == {0: "broken", 1: "resistant", 8: "responsive"}


def test_ablation_effects_and_diagnosis() -> None:
    scores = {f"score_k{k}": 60.0 + 5 * k for k in range(6)}  # instruction +20 over baseline 40; demos +25 at k=5
    run = {**_row("x", "phi4", "math", 40.0, 85.0, **scores), "optimizer": "demo_ablation", "phase": "3"}
    effects = tables.ablation_effects(typed_runs([run]))
    assert effects.loc[0, "instruction_effect_pp"] == 20.0 and effects.loc[0, "demo_effect_k5"] == 25.0
    assert effects.loc[0, "diagnosis"] == "demo-driven"


def _smoke_shaped_runs() -> pd.DataFrame:
    """Runs shaped like the smoke's: phase "smoke" everywhere, no phase 3/4/5 label."""
    smoke = {"phase": "smoke", "experiment": "smoke-lowdata", "grid": "smoke-lowdata", "teacher": None, "n_eval": 10}
    rows = [
        {**_row("m", "qwen-coder-1.5b", "math", 80.0, 90.0), **smoke, "experiment": "smoke", "n_labeled": 6},
        {**_row("l2", "qwen-coder-1.5b", "math", 60.0, 60.0, n_labeled=2), **smoke, "optimizer": "bootstrap_rs"},
        {**_row("l4", "qwen-coder-1.5b", "math", 60.0, 100.0, n_labeled=4), **smoke, "optimizer": "bootstrap_rs"},
        {**_row("f", "qwen-coder-1.5b", "math", 80.0, 90.0, n_labeled=4), **smoke, "optimizer": "bootstrap"},
        {
            **_row(
                "a", "qwen-coder-1.5b", "math", 80.0, 90.0, score_k0=70.0, score_k1=80.0, score_k2=90.0, n_labeled=4
            ),
            **smoke,
            "optimizer": "demo_ablation",
        },
        {**_row("b", "qwen-coder-1.5b", "analysis", 75.0, 75.0, n_labeled=0), **smoke, "optimizer": "none"},
        {**_row("r", "qwen3:4b", "qa", 40.0, 40.0, n_labeled=0), **smoke, "optimizer": "none", "n_eval": 4},
    ]
    return typed_runs(rows)


def test_tables_select_runs_by_design_not_by_phase_label() -> None:
    runs = _smoke_shaped_runs()
    low = tables.low_data_table(runs)
    # only the bootstrap_rs series differs in n_labeled alone; mipro (n 6) and bootstrap (n 4) are single points
    assert low[["optimizer", "n_labeled"]].values.tolist() == [["bootstrap_rs", 2], ["bootstrap_rs", 4]]
    assert low["outcome"].tolist() == ["resistant", "responsive"]
    ablation = tables.ablation_effects(runs)
    assert ablation[["model", "instruction_effect_pp", "demo_effect_k2"]].values.tolist() == [
        ["qwen-coder-1.5b", -10.0, 20.0]
    ]
    reasoning = tables.reasoning_table(runs, {n for n, m in load_registry().models.items() if m.reasoning})
    assert reasoning[["model", "task"]].values.tolist() == [["qwen3:4b", "qa"]]


def test_report_of_smoke_shaped_runs_fills_the_design_tables_without_row_numbers(tmp_path: Path) -> None:
    from analysis.report import render

    runs = _smoke_shaped_runs()
    examples = pd.DataFrame(columns=["run_id", "example_id", "condition", "score", "latency_ms", "prompt_tokens",
                                     "completion_tokens"])  # fmt: skip
    text = render(runs, examples, load_registry(), tmp_path).read_text()
    sections = {part.split("\n", 1)[0]: part for part in text.split("\n## ")[1:]}
    for title in ("7. Instruction", "8. Reasoning", "9. Low-data"):
        body = next(v for k, v in sections.items() if k.startswith(title))
        assert "_no runs for this table yet_" not in body, title
    low = next(v for k, v in sections.items() if k.startswith("9. Low-data"))
    assert low.splitlines()[2].startswith("| model ")  # no unnamed row-number column before it
    assert "n = 4–10 test examples per condition" in text and "(n = 10)" in text and "(n = 4)" in text


def test_optimizers_pair_on_the_same_point_with_a_paired_ci_and_their_cost() -> None:
    """Three optimizers on one (model, task, n_labeled, seed), 40 shared test examples: GEPA gets 20 more right than
    MIPROv2 with fewer calls, SIMBA the same as MIPROv2; a second point has only MIPROv2 (nothing to pair)."""
    runs = typed_runs(
        [
            _row("m", "qwen3:4b", "math", 20.0, 40.0, optimizer="mipro", optimize_lm_calls=300.0, cost_usd=0.3),
            _row("g", "qwen3:4b", "math", 20.0, 90.0, optimizer="gepa", optimize_lm_calls=150.0, cost_usd=0.1),
            _row("s", "qwen3:4b", "math", 20.0, 40.0, optimizer="simba", optimize_lm_calls=310.0, cost_usd=0.2),
            _row("x", "qwen3:4b", "qa", 20.0, 40.0, optimizer="mipro", optimize_lm_calls=300.0),
        ]
    )
    base = binary(40, 8)
    examples = pd.concat(
        [
            paired_examples("m", base, binary(40, 16)),
            paired_examples("g", base, binary(40, 36)),
            paired_examples("s", base, binary(40, 16)[::-1]),  # same score, other examples right
            paired_examples("x", base, binary(40, 16)),
        ]
    )
    pairs = tables.optimizer_pairs(runs, examples).set_index(["a", "b"])
    assert sorted(pairs.index) == [("gepa", "mipro"), ("gepa", "simba"), ("mipro", "simba")]  # qa: no pair
    gepa_mipro = pairs.loc[("gepa", "mipro")]  # b − a = mipro − gepa
    assert gepa_mipro["b_minus_a_pp"] == pytest.approx(-50.0) and gepa_mipro["n"] == 40
    assert gepa_mipro["ci_high"] < 0 and gepa_mipro["verdict"] == "gepa better; gepa used 2.0× fewer calls"
    assert (gepa_mipro["delta_a_pp"], gepa_mipro["delta_b_pp"]) == (70.0, 20.0)
    same = pairs.loc[("mipro", "simba")]
    assert same["b_minus_a_pp"] == 0.0 and same["verdict"] == "no significant difference; about the same calls"


def test_study_tables_are_per_optimizer() -> None:
    """Two optimizers on the same runs: table 1 has one row per (optimizer, model), never their average."""
    runs = study_runs()
    gepa = runs.assign(
        optimizer="gepa", run_id=runs["run_id"] + "g", optimized_score=runs["baseline_score"], delta_pp=0.0
    )
    both = typed_runs(pd.concat([runs, gepa]).to_dict("records"))
    summary = tables.per_model_summary(both)
    assert summary.loc[("gepa", "qwen2.5:7b"), "delta_pp"] == 0.0
    assert round(summary.loc[("mipro", "qwen2.5:7b"), "delta_pp"], 1) == 14.2
    assert set(tables.tiers(both).index.get_level_values("optimizer")) == {"gepa", "mipro"}
    assert set(tables.local_beats_api(both)["optimizer"]) == {"mipro"}  # gepa changed nothing: no swing


def test_format_or_skill_splits_the_strict_gain() -> None:
    """Strict gain = skill + format, each with its interval; rows of a strictly scored grid are left out."""
    runs = typed_runs([_row("units", "phi4", "math", 60.0, 70.0), _row("mixed", "phi4", "qa", 50.0, 60.0),
                       _row("rag", "phi4", "rag", 60.0, 60.0), _row("strict", "phi4", "math", 0.0, 80.0,
                                                                     scoring="strict")])  # fmt: skip
    n = 100
    # math: 60 right by the metric, of which 10 strictly; optimized: 70 right, all strictly (60 format fixes, 10 skill)
    units = paired_examples("units", binary(n, 60), binary(n, 70), strict=(binary(n, 10), binary(n, 70)))
    # qa: skill only (the strict score follows the metric)
    mixed = paired_examples("mixed", binary(n, 50), binary(n, 60), strict=(binary(n, 50), binary(n, 60)))
    # rag: the strict score (exact answer) may exceed the headline (faithfulness): the wider interval
    rag = paired_examples("rag", [0.5] * n, [0.5] * n, strict=(binary(n, 20), binary(n, 40)))
    strict = paired_examples("strict", binary(n, 0), binary(n, 80), strict=(binary(n, 0), binary(n, 80)))
    table = tables.format_or_skill(runs, pd.concat([units, mixed, rag, strict], ignore_index=True)).set_index("task")
    assert list(table.index) == ["math", "qa", "rag"]
    assert (table["strict_delta_pp"] - table["skill_pp"] - table["format_pp"]).abs().max() < 1e-9
    math, qa, rag_row = table.loc["math"], table.loc["qa"], table.loc["rag"]
    assert (math["strict_delta_pp"], math["skill_pp"], math["format_pp"]) == pytest.approx((60.0, 10.0, 50.0))
    assert math["format_share"] == pytest.approx(50 / 60) and math["format"] == "gain"
    assert math["test"] == "Tango score interval; format part: Tango score interval"
    assert qa["format_pp"] == 0.0 and qa["format"] == "not shown" and qa["skill"] == "gain"  # 10 up, 0 down
    assert rag_row["format_pp"] == pytest.approx(20.0) and rag_row["test"].endswith("format part: betting interval")
    assert rag_row["format_ci_low"] <= 20.0 <= rag_row["format_ci_high"]


def test_format_or_skill_leaves_out_tables_without_strict_scores() -> None:
    runs = typed_runs([_row("old", "phi4", "math", 50.0, 60.0)])
    old = paired_examples("old", binary(50, 25), binary(50, 30))
    assert tables.format_or_skill(runs, old).empty
