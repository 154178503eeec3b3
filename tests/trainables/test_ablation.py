"""Phase 3 against a phase-1 run in the same MLflow store: the ablation evaluates that run's program (its
instruction, its first k demos), and every way of pointing it at a missing or too-small program fails early."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from grid.spec import GridSpec, Trial, expand
from trainables.ablation import check_sources
from trainables.errors import ArbError
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

SOURCE = {"grid": "p1", "optimizer": "bootstrap", "teacher": None, "demos": 2, "n_labeled": 6}


def _trial(grid: str, optimizer: str, demos: int, **params: Any) -> Trial:
    spec = GridSpec(name=grid, phase="3" if optimizer == "demo_ablation" else "1", models=["llama3.2"],
                    tasks=["math"], optimizer=optimizer, demos=[demos], n_labeled=[6], n_val=3, n_eval=8,
                    data="sample", optimizer_params=params)  # fmt: skip
    [trial] = expand(spec, load_registry())
    return trial


def _run(trial: Trial, uri: str, url: str) -> dict[str, float]:
    exp = tracking.ensure_experiment(uri, trial.grid)
    runtime = {"tracking_uri": uri, "experiment_id": exp, "endpoints": {"llama3.2": url}}
    return execute_trial({"trial": trial.model_dump(), "runtime": runtime})


def _only_run(client: MlflowClient, grid: str, trial: Trial) -> Any:
    [run] = tracking.find_runs(client, client.get_experiment_by_name(grid).experiment_id, trial.key)
    return run


def _program(client: MlflowClient, run: Any) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(Path(client.download_artifacts(run.info.run_id, "program.json")).read_text())
    return state


def test_ablation_reads_the_phase1_program(stub: StubServer, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    phase1 = _trial("p1", "bootstrap", 2)
    first = _run(phase1, tracking_uri, stub.url)
    assert first["n_demos_chosen"] == 2
    source_run = _only_run(client, "p1", phase1)
    # Bootstrap keeps the default instruction; mark it so that its origin can be traced into the prompts.
    source_state = _program(client, source_run)
    name = next(k for k in source_state if k != "metadata")
    source_state[name]["signature"]["instructions"] = "PHASE-1 MARKER: solve it."
    marked = Path(tracking_uri.removeprefix("sqlite:///")).with_name("program.json")
    marked.write_text(json.dumps(source_state))
    client.log_artifact(source_run.info.run_id, str(marked))

    ablation = _trial("p3", "demo_ablation", 2, source=SOURCE)
    check_sources(tracking_uri, [ablation])  # the driver's preflight passes
    calls_before = len(stub.state.bodies)
    metrics = _run(ablation, tracking_uri, stub.url)

    run = _only_run(client, "p3", ablation)
    assert run.data.tags["arb.source_run"] == source_run.info.run_id
    state = _program(client, run)
    assert state[name]["demos"] == source_state[name]["demos"]  # the demos came from the phase-1 run
    assert state[name]["signature"]["instructions"] == "PHASE-1 MARKER: solve it."
    # and the model really saw them: every ablation prompt after the baseline carries the instruction,
    # and the phase-1 demos' questions appear in the k > 0 prompts
    ablation_bodies = stub.state.bodies[calls_before:]
    assert sum("PHASE-1 MARKER" in body for body in ablation_bodies) == 3 * 8
    demo_questions = [d["question"] for d in source_state[name]["demos"]]
    assert all(any(q in body for body in ablation_bodies) for q in demo_questions)

    assert {f"score_k{k}" for k in range(3)} <= set(metrics)
    assert metrics["instruction_effect_pp"] == pytest.approx(metrics["score_k0"] - metrics["baseline_score"])
    assert metrics["demo_effect_pp"] == pytest.approx(metrics["score_k2"] - metrics["score_k0"])
    assert metrics["optimized_score"] == metrics["score_k2"]
    table = pd.read_csv(io.StringIO(Path(client.download_artifacts(run.info.run_id, "examples.csv")).read_text()))
    assert sorted(table["condition"].unique()) == ["baseline", "k0", "k1", "k2"]
    assert metrics["eval_lm_calls"] == 4 * 8  # baseline + k = 0, 1, 2 on 8 examples, one call each


def test_ablation_without_its_source_run_fails_before_work(tracking_uri: str) -> None:
    tracking.ensure_experiment(tracking_uri, "p3")
    with pytest.raises(ArbError, match="no finished run for its source trial in grid 'p1'"):
        check_sources(tracking_uri, [_trial("p3", "demo_ablation", 2, source=SOURCE)])


def test_ablation_asking_for_more_demos_than_the_program_has(stub: StubServer, tracking_uri: str) -> None:
    _run(_trial("p1", "bootstrap", 2), tracking_uri, stub.url)
    with pytest.raises(ArbError, match="asks for k up to 4, but the source program has 2 demos"):
        check_sources(tracking_uri, [_trial("p3", "demo_ablation", 4, source=SOURCE)])


@pytest.mark.parametrize(
    ("params", "needle"),
    [({}, "needs `optimizer_params.source`"), ({"source": {"grid": "p1"}}, "optimizer"), ({"source": 3}, "source")],
)
def test_ablation_source_is_validated_at_load(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ArbError, match=needle):
        _trial("p3", "demo_ablation", 2, **params)
