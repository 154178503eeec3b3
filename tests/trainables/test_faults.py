"""Fault injection on the LM server (429 with Retry-After, 500, a stall, a dropped connection): every call ends
within its timeout, retries are bounded, a trial that cannot get answers records the error class, a transient
fault costs only the retries, and nothing hangs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import expected_baseline
from mlflow.tracking import MlflowClient
from stub_server import StubServer, table_responder

from grid.spec import GridSpec, Trial, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

TIMEOUT_S, RETRIES, STALL_S = 2.0, 2, 6.0
ERROR_CLASSES = {"429": "LMRateLimitError", "500": "LMServerError", "stall": "LMTimeoutError|LMTransportError",
                 "drop": "LMTransportError"}  # fmt: skip
# Worst case per call: every attempt waits out its timeout, plus client back-off; generous, but finite.
BOUND_S = (1 + RETRIES) * (TIMEOUT_S + 5.0) + 10.0


def _registry() -> dict[str, Any]:
    data = load_registry().model_dump()
    for name in ("llama3.2", "gpt-4o"):
        data["models"][name].update(timeout_s=TIMEOUT_S, retries=RETRIES)
    return data


def _trial(model: str) -> Trial:
    spec = GridSpec(name=f"faults-{model}", models=[model], tasks=["math"], optimizer="none", demos=[0],
                    n_labeled=[0], n_val=1, n_eval=8, data="sample")  # fmt: skip
    [trial] = expand(spec, load_registry())
    return trial


def _config(trial: Trial, uri: str, url: str) -> dict[str, Any]:
    exp = tracking.ensure_experiment(uri, trial.grid)
    runtime = {"tracking_uri": uri, "experiment_id": exp, "endpoints": {trial.model: url}, "registry": _registry()}
    return {"trial": trial.model_dump(), "runtime": runtime}


MODELS = [("llama3.2", ""), ("gpt-4o", "/v1")]  # Ollama through LiteLLM; OpenAI through DSPy's native client


@pytest.mark.parametrize("fault", sorted(ERROR_CLASSES))
@pytest.mark.parametrize(("model", "suffix"), MODELS)
def test_persistent_fault_errors_the_trial_in_bounded_time(
    fault: str, model: str, suffix: str, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
    trial = _trial(model)
    with StubServer([model]) as server:
        server.state.fault_always, server.state.stall_seconds = fault, STALL_S
        start = time.perf_counter()
        with pytest.raises(Exception) as raised:
            execute_trial(_config(trial, tracking_uri, server.url + suffix))
        elapsed = time.perf_counter() - start
        attempts = len(server.state.fault_log)
    assert raised.typename in ERROR_CLASSES[fault].split("|")
    assert elapsed < BOUND_S
    # the examples in flight when the fault began (1 for Ollama, all 8 for the API's 8 in flight) each retried
    # twice, then the trial stops: no example starts after the first one failed
    in_flight = min(8, load_registry().get(model).in_flight)
    assert attempts == in_flight * (1 + RETRIES)
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name(trial.grid).experiment_id, trial.key)
    assert run.data.tags["arb.status"] == "errored"
    assert run.data.tags["arb.error_class"] in ERROR_CLASSES[fault].split("|")


@pytest.mark.parametrize(("model", "suffix"), MODELS)
def test_transient_faults_cost_only_their_retries(
    model: str, suffix: str, tracking_uri: str, math_splits: Any, known_answers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
    with StubServer([model], table_responder(known_answers)) as server:
        server.state.faults = ["429", "500"]  # the first call is retried twice, then answered
        metrics = execute_trial(_config(_trial(model), tracking_uri, server.url + suffix))
        assert server.state.fault_log == ["429", "500"]
    assert metrics["baseline_score"] == pytest.approx(expected_baseline(math_splits, known_answers))
    assert metrics["lm_calls"] == 8  # DSPy counts answered calls; the retries happened inside the client
    assert metrics["lm_errors"] == 0
