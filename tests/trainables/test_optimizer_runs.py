"""GEPA and SIMBA trials over real HTTP against the stub server: they compile, GEPA's candidates reach MLflow, a GEPA
trial killed mid-compile resumes into the same run, and a three-optimizer grid reports its optimizer table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer, chat_adapter_reply, table_responder

from grid.spec import GridSpec, Trial, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

REVISED = "REVISED: give the final number only."
"""The instruction the stub's reflection proposes; a program that carries it answers every known question."""


def _reflective(all_answers: dict[str, str], few_answers: dict[str, str], proposal: str = REVISED) -> Any:
    """A student that knows only `few_answers` until its instruction is GEPA's revised one, and a reflection model
    that proposes that instruction: a planted effect that only a working reflection loop can find."""
    base, better = table_responder(few_answers), table_responder(all_answers)

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        last = str(messages[-1].get("content")) if messages else ""
        if "new_instruction" in last:  # dspy.GEPA's reflection signature (dspy 3.4.1), in either adapter's format
            return (
                json.dumps({"new_instruction": proposal})
                if "JSON object" in last
                else chat_adapter_reply({"new_instruction": proposal})
            )
        system = " ".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        return (better if REVISED in system else base)(model, messages)

    return respond


def _trials(optimizers: list[str], params: dict[str, Any], grid: str = "newopt") -> list[Trial]:
    spec = GridSpec(
        name=grid, phase="test", models=["llama3.2"], tasks=["math"], optimizer=optimizers, demos=[2],
        n_labeled=[6], n_val=3, n_eval=8, data="sample", optimizer_params=params,
    )  # fmt: skip
    return expand(spec, load_registry())


def _config(trial: Trial, uri: str, url: str) -> dict[str, Any]:
    exp = tracking.ensure_experiment(uri, trial.grid)
    return {"trial": trial.model_dump(), "runtime": {"tracking_uri": uri, "experiment_id": exp,
                                                     "endpoints": {"llama3.2": url}}}  # fmt: skip


@pytest.fixture()
def reflective(math_splits: Any) -> Any:
    every = {ex.question: ex.answer for ex in math_splits.train + math_splits.val + math_splits.test}
    few = {ex.question: ex.answer for ex in math_splits.test[:2]}
    with StubServer(["llama3.2"], _reflective(every, few)) as server:
        yield server


GEPA = {"max_metric_calls": 24, "reflection_minibatch_size": 2, "use_merge": False}  # floor for n_val 3: 3+3·(2+3)=18


def test_gepa_reflects_finds_the_planted_instruction_and_logs_its_candidates(
    reflective: StubServer, tracking_uri: str
) -> None:
    [trial] = _trials(["gepa"], GEPA)
    metrics = execute_trial(_config(trial, tracking_uri, reflective.url))
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name("newopt").experiment_id, trial.key)
    assert run.data.tags["arb.status"] == "finished", run.data.tags.get("arb.compile_error")
    # baseline: 2 of 8 known; the revised instruction knows all 8
    assert metrics["baseline_score"] == 25.0 and metrics["optimized_score"] == 100.0
    assert metrics["candidates"] >= 2 and metrics["n_demos_chosen"] == 0  # GEPA adds no demos
    assert REVISED in Path(client.download_artifacts(run.info.run_id, "instruction.txt")).read_text()
    history = client.get_metric_history(run.info.run_id, "candidate_val_score")
    assert [m.step for m in history] == list(range(int(metrics["candidates"])))
    assert max(m.value for m in history) == 100.0 and history[0].value < 100.0  # the seed, then the better child
    table = Path(client.download_artifacts(run.info.run_id, "candidates.json")).read_text()
    assert REVISED in table and "seed" in table


def test_simba_compiles_with_the_grids_demo_cap(reflective: StubServer, tracking_uri: str) -> None:
    [trial] = _trials(["simba"], {"bsize": 2, "num_candidates": 2, "max_steps": 1})
    metrics = execute_trial(_config(trial, tracking_uri, reflective.url))
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name("newopt").experiment_id, trial.key)
    assert run.data.tags["arb.status"] == "finished", run.data.tags.get("arb.compile_error")
    assert metrics["optimize_lm_calls"] > 0 and metrics["n_demos_chosen"] <= trial.demos
    # its candidates, best first, in the run (not pickled into the logged program)
    history = client.get_metric_history(run.info.run_id, "candidate_train_score")
    assert len(history) == metrics["candidates"] >= 1
    assert [m.value for m in history] == sorted((m.value for m in history), reverse=True)
    assert "instruction" in Path(client.download_artifacts(run.info.run_id, "candidates.json")).read_text()


class Killed(BaseException):
    """What a killed worker looks like to the trial: not an `Exception`, so no optimizer or trial handler keeps it."""


def test_a_gepa_trial_killed_mid_compile_resumes_its_state_into_the_same_run(
    reflective: StubServer, tracking_uri: str
) -> None:
    from trainables.tasks import TASKS

    [trial] = _trials(["gepa"], GEPA, grid="killed")
    task = TASKS["math"]
    real, seen = task.feedback, []

    def dies_after_the_seed(*args: Any) -> Any:
        if len(args) < 3:  # the trial's own evaluation (a traced example's rationale), not GEPA's call
            return real(*args)
        seen.append(1)
        if len(seen) == 5:  # the seed's 3 validation examples, then into the first minibatch
            raise Killed()
        return real(*args)

    object.__setattr__(task, "feedback", dies_after_the_seed)  # Task is frozen; restored below
    try:
        with pytest.raises(Killed):
            execute_trial(_config(trial, tracking_uri, reflective.url))
    finally:
        object.__setattr__(task, "feedback", real)
    state = tracking.default_home() / "cache" / "optimizer-state" / trial.key
    assert (state / "gepa_state.bin").exists()  # GEPA saved its state before the kill
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("killed").experiment_id
    [errored] = tracking.find_runs(client, exp, trial.key)
    assert errored.data.tags["arb.status"] == "errored"

    metrics = execute_trial(_config(trial, tracking_uri, reflective.url))
    [run] = tracking.find_runs(client, exp, trial.key)  # one run per key, the same one
    assert run.info.run_id == errored.info.run_id and run.data.tags["arb.status"] == "finished"
    assert metrics["optimized_score"] == 100.0


def test_a_point_with_several_optimizers_pays_its_baseline_once(reflective: StubServer, tracking_uri: str) -> None:
    first, second = _trials(["bootstrap", "gepa"], {"gepa": GEPA}, grid="shared")
    assert first.share_baseline and second.share_baseline
    a = execute_trial(_config(first, tracking_uri, reflective.url))
    calls = reflective.state.calls.total()
    b = execute_trial(_config(second, tracking_uri, reflective.url))
    assert (a["baseline_shared"], b["baseline_shared"]) == (0.0, 1.0)
    assert a["baseline_score"] == b["baseline_score"] == 25.0
    assert b["eval_lm_calls"] == a["eval_lm_calls"] - 8  # the 8 baseline examples were not asked again
    assert reflective.state.calls.total() - calls == b["lm_calls"] - b["cache_hits"]
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("shared").experiment_id
    [run_a] = tracking.find_runs(client, exp, first.key)
    [run_b] = tracking.find_runs(client, exp, second.key)
    kept = run_b.data.tags["arb.baseline_run"]
    assert (
        client.get_run(kept).data.tags["arb.kind"] == "baseline"
        and "arb.trial_key" not in client.get_run(kept).data.tags
    )  # not a trial: nothing that counts trials sees it
    # each trial's record still carries the baseline's per-example results, the same ones
    rows = [
        json.loads(Path(client.download_artifacts(r.info.run_id, "examples.json")).read_text()) for r in (run_a, run_b)
    ]
    base = [_baseline_rows(r) for r in rows]
    assert base[0] == base[1] and len(base[0]) == 8
    assert tracking.finished_statuses(tracking_uri, "shared") == {first.key: "finished", second.key: "finished"}


def _baseline_rows(table: dict[str, Any]) -> list[tuple[str, float]]:
    """(example id, score) of the baseline rows of an MLflow table artifact."""
    at = {name: i for i, name in enumerate(table["columns"])}
    rows = [r for r in table["data"] if r[at["condition"]] == "baseline"]
    return sorted((r[at["example_id"]], r[at["score"]]) for r in rows)


def test_a_reflection_cut_at_max_tokens_is_not_adopted(math_splits: Any, tracking_uri: str) -> None:
    """The reflection model's proposal runs past max_tokens (1024, the registry default): the stub cuts it and says
    "length", as Ollama does; GEPA must not adopt the fragment as an instruction (its users saw that happen)."""
    every = {ex.question: ex.answer for ex in math_splits.train + math_splits.val + math_splits.test}
    few = {ex.question: ex.answer for ex in math_splits.test[:2]}
    rambling = REVISED + " " + "and furthermore " * 600
    with StubServer(["llama3.2"], _reflective(every, few, proposal=rambling)) as server:
        [trial] = _trials(["gepa"], GEPA, grid="cut")
        metrics = execute_trial(_config(trial, tracking_uri, server.url))
    assert metrics["proposals_cut"] >= 1
    assert metrics["candidates"] == 1 and metrics["optimized_score"] == metrics["baseline_score"] == 25.0
