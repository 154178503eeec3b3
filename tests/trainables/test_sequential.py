"""Sequential paired evaluation: the confidence sequence's guarantees, one test per verdict, the stopping rule in a
real sweep (planted effect: stops early; null: runs to n_eval), its record, and the power `arb plan` prints."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import binom, norm
from stub_server import StubServer, _text, chat_adapter_reply, requested_output_fields

from analysis.runs import load_study
from analysis.tables import delta_significance, discordance_by_task
from grid.launch import run_grid
from grid.spec import GridSpec, expand, load_grid
from trainables.errors import ArbError
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.stats.paired import ALPHA, BETTING, TANGO, delta_verdict, paired_delta
from trainables.stats.sequential import StopRule, check, confidence_sequence, decide_chance, run


def _differences(rng: np.random.Generator, n: int, up: float, down: float) -> np.ndarray:
    """Paired differences of 0/1 scores: +1 with probability `up`, −1 with `down`, else 0 (a tie)."""
    u = rng.random(n)
    return np.where(u < up, 1.0, np.where(u < up + down, -1.0, 0.0))


def test_the_sequence_covers_the_true_mean_at_every_look() -> None:
    rng = np.random.default_rng(7)
    up, down = 0.3, 0.1  # true mean difference +0.2
    missed = 0
    for _ in range(400):
        looks = confidence_sequence(_differences(rng, 60, up, down))
        missed += any(not (look.ci_low <= 20.0 <= look.ci_high) for look in looks)
    assert missed / 400 <= ALPHA  # at every one of the 60 looks at once: what a fixed-n interval cannot promise


def test_a_null_effect_is_rarely_called_improved_or_hurt_however_often_it_is_checked() -> None:
    rng = np.random.default_rng(11)
    rule = StopRule(n_max=50, n_min=5, check_every=1)  # a look after every example: the worst case for peeking
    decided = sum(run(rule, _differences(rng, 50, 0.2, 0.2)).reason.startswith("decided") for _ in range(1500))
    assert decided / 1500 <= ALPHA
    # the same peeking with the fixed-n test at every look is what the sequence exists to avoid
    peeked = 0
    for _ in range(300):
        d = _differences(rng, 50, 0.2, 0.2)
        up, down = np.cumsum(d > 0)[4:], np.cumsum(d < 0)[4:]  # McNemar's exact test after 5, 6, … 50 examples
        p = np.minimum(1, 2 * binom.cdf(np.minimum(up, down), up + down, 0.5))
        peeked += bool((p <= ALPHA).any())
    assert peeked / 300 > ALPHA  # 28 of 300 (seeded): nearly twice the level it claims


def test_interval_p_value_and_verdict_agree_for_both_tests() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(4, 60))
        a = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(float)
        b = np.where(rng.random(n) < rng.uniform(0, 0.5), 1 - a, a) if rng.random() < 0.5 else rng.random(n)
        d = paired_delta(a, b)
        assert d.significant == (d.ci_low > 0 or d.ci_high < 0) == (delta_verdict(d) != "no significant change")
        assert d.ci_low <= d.delta_pp <= d.ci_high
        for look in confidence_sequence(b - a):
            assert (look.p_value <= ALPHA) == (look.ci_low > 0 or look.ci_high < 0)


def test_the_smoke_row_that_contradicted_itself_now_reads_one_way() -> None:
    # the smoke's BootstrapFewShot delta: 3 of 8 examples up, none down. The bootstrap CI said [2.5, 62.5] beside
    # a sign test p = 0.25 and "no significant change"; now all three come from Tango's score test.
    d = paired_delta(np.zeros(8), np.array([1.0, 1, 1, 0, 0, 0, 0, 0]))
    assert d.p_value == pytest.approx(2 * norm.sf(2 / np.sqrt(3))) and d.ci_low < 0 < d.ci_high
    assert delta_verdict(d) == "no significant change" and d.test == TANGO
    # 0/1 scores: at 0 Tango's corrected statistic is McNemar's corrected test, (|up − down| − 1) / √(up + down)
    assert paired_delta(np.zeros(50), np.r_[np.ones(10), np.zeros(40)]).p_value == pytest.approx(
        2 * norm.sf(9 / np.sqrt(10))
    )
    # continuous scores (extraction's per-sentence F1) get the betting interval, order-free
    a, b = np.linspace(0.2, 0.6, 8), np.linspace(0.3, 0.9, 8)
    d = paired_delta(a, b)
    assert d.test == BETTING and paired_delta(a[::-1], b[::-1]) == d and d.ci_low < d.delta_pp < d.ci_high


def test_the_rule_looks_where_it_says_and_stops_for_its_reasons() -> None:
    assert StopRule(n_max=50).looks() == [10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert StopRule(n_max=12, n_min=10, check_every=5).looks() == [10, 12]
    assert StopRule(n_max=3, n_min=1, check_every=5).looks() == [3]
    rule = StopRule(n_max=50, n_min=4, check_every=2)
    assert check(rule, np.ones(3)) is None  # before n_min nothing is decided
    improved = run(rule, np.ones(50))
    assert improved.reason == "decided_improved" and improved.n < 10 and improved.look.ci_low > 0
    assert run(rule, -np.ones(50)).reason == "decided_hurt"
    # no example moved: by 40 the sequence is ±11.4 pp, not yet inside ±10; by 48 it is
    assert run(StopRule(n_max=40, n_min=4, check_every=2), np.zeros(40)).reason == "max_reached"
    equivalent = run(rule, np.zeros(50))
    assert equivalent.reason == "equivalent" and 40 < equivalent.n < 50 and equivalent.look.ci_high <= 10


def test_futility_stops_hopeless_comparisons_and_never_decides_one() -> None:
    d = np.tile([1.0, -1.0, 0.0, 0.0, 0.0], 10)  # as many up as down: resampling it cannot find an effect
    assert decide_chance(d[:10], 50, seed=0) < 0.1 < decide_chance(np.ones(10), 50, seed=0)
    with_futility = run(StopRule(n_max=50, futility=0.1), d)
    assert with_futility.reason == "futile" and with_futility.n < 50
    assert decide_chance(d[:10], 50, seed=0) == decide_chance(d[:10], 50, seed=0)  # seeded: the same stop on a rerun


def test_power_is_the_exact_power_of_the_reports_test() -> None:
    from trainables.stats import paired as stats
    from trainables.stats import sequential

    n, rate = 50, stats.prior_discordance()
    mde = stats.detectable_effect_pp(n, rate)
    assert mde == 20.0 and stats.detectable_effect_pp(200, rate) < mde < stats.detectable_effect_pp(8, rate)

    def simulated_power(effect_pp: float) -> float:  # the report's own test on simulated examples
        up, down = stats.discordant_outcomes(rate, effect_pp / 100)
        rng = np.random.default_rng(1)
        hits = 0
        for _ in range(2000):
            d = _differences(rng, n, up, down)
            hits += paired_delta(np.zeros(n) + (d < 0), np.zeros(n) + (d > 0)).significant
        return hits / 2000

    assert simulated_power(mde) >= 0.77 and simulated_power(mde - 3) < 0.8
    # anytime validity has a price: the sequence needs a larger effect to decide within the same n
    assert sequential.detectable_effect_pp(n, rate) >= mde


def _spec(**fields: Any) -> GridSpec:
    return GridSpec(**{"name": "g", "models": ["llama3.2"], "tasks": ["math"], "optimizer": "bootstrap", **fields})


def test_stopping_is_in_the_key_only_when_sequential() -> None:
    registry = load_registry()
    fixed = expand(_spec(), registry)[0]
    assert fixed.stopping_key() == {} and fixed.key == expand(_spec(stopping="fixed", n_min=3), registry)[0].key
    sequential = expand(_spec(stopping="sequential"), registry)[0]
    assert sequential.key != fixed.key and sequential.run_name.endswith("· seq")
    assert expand(_spec(stopping="sequential", n_min=20), registry)[0].key != sequential.key
    assert not expand(_spec(stopping="sequential", optimizer=["bootstrap", "mipro"]), registry)[0].share_baseline


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stopping": "sequential", "n_min": 60, "n_eval": 50}, "n_min"),
        ({"stopping": "sequential", "optimizer": "none"}, "optimizer none"),
        ({"stopping": "sometimes"}, "stopping"),
        ({"stopping": "sequential", "futility": 1.5}, "futility"),
    ],
)
def test_bad_stopping_settings_are_refused_at_load(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    import yaml

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "models": ["llama3.2"], "tasks": ["math"], **fields}))
    with pytest.raises(ArbError, match=message):
        load_grid(path)


# --- a sweep on the stub: a planted effect and a null one --------------------------------------------------------

N_TEST = 30


def _addition_data(root: Path) -> Path:
    """GSM8K-shaped files (question; answer ending in `#### n`) with questions the stub can answer."""
    rng = np.random.default_rng(0)
    (root / "gsm8k").mkdir(parents=True)
    for split, n in (("train", 12), ("test", N_TEST)):
        rows = []
        for i in range(n):
            a, b = (int(x) for x in rng.integers(1, 50, size=2))
            rows.append(
                {"question": f"Item {split}-{i}: What is {a} plus {b}?", "answer": f"{a}+{b}={a + b}.\n#### {a + b}"}
            )
        pd.DataFrame(rows).to_json(root / "gsm8k" / f"{split}.jsonl", orient="records", lines=True)
    return root


def _planted(model: str, messages: list[dict[str, Any]]) -> str:
    """llama3.2 answers right only with few-shot demos in the prompt (what the optimizer adds): a planted effect.
    qwen3:4b answers the same with or without them: no effect."""
    found = re.search(r"What is (\d+) plus (\d+)", _text(messages[-1]))
    right = str(int(found[1]) + int(found[2])) if found else "0"
    with_demos = len(messages) > 2  # ChatAdapter puts each demo in a user/assistant pair before the question
    if model == "llama3.2":
        answer = right if with_demos else "0"
    else:
        answer = right if found and int(found[1]) % 2 == 0 else "0"
    fields = requested_output_fields(messages) or ["answer"]
    return chat_adapter_reply({f: answer if f == "answer" else "adding the two numbers" for f in fields})


def test_a_sequential_sweep_stops_early_on_a_planted_effect_and_runs_on_a_null(
    tmp_path: Path, tracking_uri: str
) -> None:
    data = _addition_data(tmp_path / "data")
    with StubServer(["llama3.2", "qwen3:4b"], _planted) as stub:
        registry_file = tmp_path / "models.yaml"
        registry_file.write_text(
            "models:\n"
            f"  llama3.2: {{provider: ollama, id: llama3.2, endpoint: '{stub.url}'}}\n"
            f"  qwen3:4b: {{provider: ollama, id: 'qwen3:4b', endpoint: '{stub.url}'}}\n"
        )
        grid_file = tmp_path / "grid.yaml"
        grid_file.write_text(
            "name: seqgrid\nmodels: [llama3.2, 'qwen3:4b']\ntasks: [math]\noptimizer: bootstrap\ndemos: [2]\n"
            f"n_labeled: [4]\nn_val: 2\nn_eval: {N_TEST}\ndata: {data}\nmax_concurrent_trials: 2\n"
            "stopping: sequential\nn_min: 4\ncheck_every: 2\nlm_cache: false\n"
        )
        spec, registry = load_grid(grid_file), load_registry(registry_file)
        outcome = run_grid(spec, registry, tracking_uri, tmp_path / "home", registry_path=str(registry_file),
                           stream=io.StringIO())  # fmt: skip
        assert outcome.failed == [] and len(outcome.statuses) == 2
        calls = {m: stub.state.calls[m] for m in ("llama3.2", "qwen3:4b")}
        # a re-run (or `arb resume`) reuses both stopped trials: their keys hold the stopping rule
        again = run_grid(spec, registry, tracking_uri, tmp_path / "home", stream=io.StringIO())
        assert again.reused == 2 and {m: stub.state.calls[m] for m in calls} == calls

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("seqgrid")
    runs = {r.data.params["model"]: r for r in client.search_runs([exp.experiment_id], "tags.`arb.trial_key` != ''")}
    planted, null = runs["llama3.2"], runs["qwen3:4b"]

    assert planted.data.tags["arb.stop_reason"] == "decided_improved"
    assert planted.data.metrics["n_evaluated"] < N_TEST / 2 and planted.data.metrics["seq_ci_low"] > 0
    assert planted.data.metrics["seq_p_value"] <= ALPHA and planted.data.metrics["eval_calls_saved"] > 0
    assert planted.data.metrics["optimized_score"] == 100.0 and planted.data.metrics["baseline_score"] == 0.0

    assert null.data.tags["arb.stop_reason"] == "max_reached" and null.data.metrics["n_evaluated"] == N_TEST
    assert null.data.metrics["seq_ci_low"] < 0 < null.data.metrics["seq_ci_high"]
    assert null.data.metrics["eval_calls_saved"] == 0
    # evaluation calls follow the stop: baseline and optimized on the examples evaluated, nothing more
    assert calls["qwen3:4b"] - null.data.metrics["optimize_lm_calls"] == 2 * N_TEST
    assert calls["llama3.2"] - planted.data.metrics["optimize_lm_calls"] == 2 * planted.data.metrics["n_evaluated"]

    # the record: the sequence at every look (artifact and metric history), the examples table, the description
    run_id = planted.info.run_id
    sequence = pd.read_csv(client.download_artifacts(run_id, "sequence.csv"))
    assert list(sequence["n"]) == list(range(4, int(planted.data.metrics["n_evaluated"]) + 1, 2))
    history = client.get_metric_history(run_id, "seq_ci_low")
    assert sorted(m.step for m in history if m.step) == list(sequence["n"])
    table = pd.read_csv(client.download_artifacts(run_id, "examples.csv"))
    n = int(planted.data.metrics["n_evaluated"])
    assert table.groupby("condition").size().to_dict() == {"baseline": n, "optimized": n}
    note = planted.data.tags["mlflow.note.content"]
    assert "confidence sequence" in note and "decided_improved" in note

    # the report's row for each trial holds the sequence's interval and says so
    loaded, examples = load_study(tracking_uri, ["seqgrid"])
    sig = delta_significance(loaded, examples).set_index("model")
    assert sig.loc["llama3.2", "test"] == "confidence sequence" and sig.loc["llama3.2", "verdict"] == "improved"
    assert sig.loc["llama3.2", "ci_low"] == pytest.approx(planted.data.metrics["seq_ci_low"])
    assert sig.loc["qwen3:4b", "verdict"] == "no significant change" and sig.loc["qwen3:4b", "stopped"] == "max_reached"
    assert tracking.find_runs(client, exp.experiment_id, planted.data.tags["arb.trial_key"])  # one run per key

    # `arb plan` reads how often these runs' examples moved: 8 of 8 (planted) and 0 of 30 (null) differ
    measured = discordance_by_task(loaded, examples)
    assert measured.loc["math", "runs"] == 2 and measured.loc["math", "examples"] == n + N_TEST
    assert measured.loc["math", "discordance"] == pytest.approx(n / (n + N_TEST))
    command = [sys.executable, "-m", "grid.cli", "plan", str(grid_file), "--tracking-uri", tracking_uri]
    env = {**os.environ, "ARB_HOME": str(tmp_path)}
    plan = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert plan.returncode == 0 and f"2 runs, {n + N_TEST} examples" in plan.stdout, plan.stderr
