"""Reviewing a trial example by example in MLflow: each traced example carries its gold answer (expectation) and
score (feedback, named after the task's metric, with a rationale), its request and response are JSON, each
condition is an evaluation run that owns its traces (so MLflow's comparison pairs the two conditions by request),
and the examples table holds inputs, gold, prediction and score. Against the stub server, over real HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer, table_responder
from test_trial import _config, _trial

from analysis.runs import load_runs
from trainables.record import tracing, tracking
from trainables.record.schema import Tag
from trainables.trial import execute_trial

GARBLED = "I would rather not say."
"""A reply with no output fields: DSPy's adapters cannot parse it."""


@pytest.fixture()
def garbling_stub(known_answers: dict[str, str], math_splits: Any) -> Any:
    """The math stub, except that it answers the last test question without any output field."""
    table = table_responder(known_answers)
    garbled = math_splits.test[-1].question

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        last = str(messages[-1].get("content", "")) if messages else ""
        return GARBLED if garbled in last else table(model, messages)

    with StubServer(["llama3.2"], respond) as server:
        yield server


def _trial_run(client: MlflowClient, name: str = "stubgrid") -> Any:
    exp = client.get_experiment_by_name(name)
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`arb.trial_key` != ''")
    return run


def test_traces_carry_gold_and_score_and_conditions_pair_up(
    garbling_stub: StubServer, tracking_uri: str, math_splits: Any
) -> None:
    trial = _trial("llama3.2")
    metrics = execute_trial(_config(trial, tracking_uri, {"llama3.2": garbling_stub.url}))
    assert metrics["parse_failures_baseline"] == 1  # the garbled example
    client = MlflowClient(tracking_uri)
    run = _trial_run(client)
    exp_id, run_id = run.info.experiment_id, run.info.run_id
    gold = {ex.question: ex.answer for ex in math_splits.test}

    # the trial's run lists both conditions' traces; each has the gold answer and the score as assessments
    traces = mlflow.search_traces(locations=[exp_id], run_id=run_id, return_type="list")
    assert len(traces) == 16
    for trace in traces:
        request = json.loads(trace.info.request_preview)
        response = json.loads(trace.info.response_preview)
        # the program's fields as JSON, not a Prediction repr; {} for the reply that could not be parsed
        assert set(request) == {"question"} and (set(response) == {"answer"} or response == {})
        [expectation] = [a for a in trace.info.assessments if a.expectation is not None]
        [feedback] = [a for a in trace.info.assessments if a.feedback is not None]  # not the optimizer's too
        assert expectation.name == "answer" and expectation.value == gold[request["question"]]
        assert feedback.name == "exact_match" and feedback.value == float(trace.info.tags["arb.score"])
        assert feedback.value in (0.0, 1.0) and feedback.rationale
        if response.get("answer") == gold[request["question"]]:
            assert feedback.value == 1.0
        root = trace.data.spans[0]
        assert expectation.span_id == feedback.span_id == root.span_id
    garbled = [t for t in traces if t.info.tags["arb.score"] == "0" and json.loads(t.info.response_preview) == {}]
    assert garbled and all("could not parse" in _feedback(t).rationale for t in garbled)

    # each condition is an evaluation run of its own, owning its traces; the same request appears in both
    evals = client.search_runs([exp_id], filter_string="tags.`arb.kind` = 'evaluation'")
    by_condition = {r.data.tags["arb.condition"]: r for r in evals}
    assert set(by_condition) == {"baseline", "optimized"}
    requests: dict[str, list[str]] = {}
    for condition, eval_run in by_condition.items():
        assert eval_run.data.tags[Tag.TRIAL_RUN] == run_id and eval_run.info.status == "FINISHED"
        assert "mlflow.parentRunId" not in eval_run.data.tags  # MLflow's Evaluation runs page hides child runs
        assert eval_run.data.metrics["examples"] == 8
        score = metrics[f"{condition}_score"]
        assert eval_run.data.metrics["score"] == pytest.approx(score)
        own = mlflow.search_traces(locations=[exp_id], run_id=eval_run.info.run_id, return_type="list")
        assert {t.info.tags["arb.condition"] for t in own} == {condition} and len(own) == 8
        # shown in every run that lists the trace (MLflow's UI hides an assessment from runs but its source run)
        assert all("mlflow.assessment.sourceRunId" not in (_feedback(t).metadata or {}) for t in own)
        requests[condition] = sorted(t.info.request_preview for t in own)
    assert requests["baseline"] == requests["optimized"]  # MLflow's "compare to" pairs traces by request

    # the description links both, and its numbers have one decimal
    note = run.data.tags["mlflow.note.content"]
    baseline_id, optimized_id = (by_condition[c].info.run_id for c in ("baseline", "optimized"))
    assert f"evaluation-runs?selectedRunUuid={optimized_id}&compareToRunUuid={baseline_id}" in note
    assert not re.findall(r"\d\.\d{2,}", note), note

    # the examples table: inputs, gold, prediction (JSON) and score, first
    table = client.load_table(exp_id, "examples.json", run_ids=[run_id])
    assert list(table.columns[:6]) == ["example_id", "condition", "inputs", "gold", "prediction", "score"]
    for row in table.itertuples():
        question = json.loads(row.inputs)["question"]
        assert json.loads(row.gold) == {"answer": gold[question]}
        assert row.prediction == "" or set(json.loads(row.prediction)) == {"answer"}

    # what analysis and resume read is the trial, not its evaluation runs
    client.set_experiment_tag(exp_id, "arb.grid_spec", "{}")  # as `arb run` marks a grid's experiment
    assert list(load_runs(tracking_uri, ["stubgrid"])["run_id"]) == [run_id]
    assert tracking.finished_statuses(tracking_uri, "stubgrid") == {trial.key: "finished"}


def _feedback(trace: Any) -> Any:
    [feedback] = [a for a in trace.info.assessments if a.feedback is not None]
    return feedback


def test_evaluation_runs_are_found_again_and_ended_as_failed_without_a_result(tracking_uri: str) -> None:
    """A retried trial (same run) reuses its conditions' runs; a trial that failed leaves them FAILED."""
    exp = tracking.ensure_experiment(tracking_uri, "retry")
    client = MlflowClient(tracking_uri)
    parent = client.create_run(exp, run_name="trial").info.run_id
    first = tracing.EvaluationRuns(client, exp, parent, "trial", 1.0)
    baseline = first.run_for("baseline")
    first.close()  # no result: the trial failed
    assert client.get_run(baseline).info.status == "FAILED"
    again = tracing.EvaluationRuns(client, exp, parent, "trial", 1.0)
    assert again.run_for("baseline") == baseline and again.run_for("optimized") != baseline
    assert tracing.EvaluationRuns(client, exp, parent, "trial", None).traced("baseline") is None  # traces: none


def test_a_shared_baseline_is_reviewed_in_every_trial_that_uses_it(stub: StubServer, tracking_uri: str) -> None:
    """Two optimizers of one point share a baseline: the second trial's baseline evaluation run holds the traces
    the first one recorded, so either trial's conditions compare example by example."""
    client = MlflowClient(tracking_uri)
    key_runs = []
    for optimizer in ("mipro", "bootstrap"):
        trial = _trial("llama3.2", optimizer=optimizer).model_copy(update={"share_baseline": True})
        execute_trial(_config(trial, tracking_uri, {"llama3.2": stub.url}))
        key_runs.append(tracking.find_runs(client, tracking.ensure_experiment(tracking_uri, trial.grid), trial.key)[0])
    second = key_runs[1]
    assert second.data.metrics["baseline_shared"] == 1.0
    exp_id = second.info.experiment_id
    [borrowed] = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{Tag.TRIAL_RUN}` = '{second.info.run_id}' and tags.`arb.condition` = 'baseline'",
    )
    traces = mlflow.search_traces(locations=[exp_id], run_id=borrowed.info.run_id, return_type="list")
    assert len(traces) == 8 and {t.info.tags["arb.condition"] for t in traces} == {"baseline"}
    # and the second trial's run lists them beside its own optimized traces
    both = mlflow.search_traces(locations=[exp_id], run_id=second.info.run_id, return_type="list")
    assert sorted(t.info.tags["arb.condition"] for t in both) == ["baseline"] * 8 + ["optimized"] * 8


def test_a_description_rounds_every_number_to_one_decimal() -> None:
    from types import SimpleNamespace

    from trainables.record import publish

    trial = SimpleNamespace(model="m", task="extraction", optimizer="mipro", demos=2, n_labeled=6, seed=0,
                            data="sample", structured=False)  # fmt: skip
    delta = SimpleNamespace(n=8, ci_low=-3.333333, ci_high=56.6666667, p_value=0.03125, test="betting interval")
    metrics = {"baseline_score": 43.47826086956522, "optimized_score": 70.0, "delta_pp": 26.52173913043478,
               "cost_usd": 0.0012345, "optimize_seconds": 12.3456, "eval_seconds": 7.89, "lm_calls": 82.0}  # fmt: skip
    note = publish.description(trial, "finished", metrics, delta, "")
    assert not re.findall(r"\d\.\d{2,}", note), note
    assert "| baseline | 43.5 |" in note and "[-3.3, +56.7]" in note and "p = 3.1%" in note and "0.1¢" in note
