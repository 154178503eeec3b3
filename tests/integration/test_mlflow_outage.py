"""The MLflow tracking server (on PostgreSQL, as cluster.yaml sets it up) goes away mid-sweep and comes back:
a short outage is waited out, a long one fails the trial retryably, and after the resume every trial key has
exactly one finished run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from servers import MlflowServer, mlflow_on_postgres, pg_bin
from stub_server import StubServer, table_responder

from grid.spec import GridSpec, Trial, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

pytestmark = pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_on_postgres(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


def _trials() -> list[Trial]:
    spec = GridSpec(name="outage", models=["llama3.2"], tasks=["math", "qa", "analysis"], optimizer="none",
                    demos=[0], n_labeled=[0], n_val=1, n_eval=3, data="sample")  # fmt: skip
    return expand(spec, load_registry())


def _config(trial: Trial, uri: str, exp: str, url: str) -> dict[str, Any]:
    return {"trial": trial.model_dump(), "runtime": {"tracking_uri": uri, "experiment_id": exp,
                                                     "endpoints": {"llama3.2": url}}}  # fmt: skip


def _retries(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(count))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def test_outage_mid_trial_then_resume_gives_one_run_per_key(
    server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    math, qa, analysis = _trials()
    exp = tracking.ensure_experiment(server.uri, "outage")
    stopped = threading.Event()

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        if not stopped.is_set():  # the server dies while the qa trial is talking to its model
            stopped.set()
            server.stop()
        return table_responder({})(model, messages)

    with StubServer(["llama3.2"]) as stub:
        execute_trial(_config(math, server.uri, exp, stub.url))  # a finished trial before the outage
        stub.state.responder = respond
        _retries(monkeypatch, 1)  # a long outage: give up quickly, retryably
        with pytest.raises(Exception, match=r"(?i)connection|max retries|refused"):
            execute_trial(_config(qa, server.uri, exp, stub.url))
        server.start()  # back
        _retries(monkeypatch, 7)
        # the resume: the finished trial is reused, the broken one finishes in its own run, the last one runs
        for trial in (math, qa, analysis):
            execute_trial(_config(trial, server.uri, exp, stub.url))
    client = MlflowClient(server.uri)
    for trial in (math, qa, analysis):
        runs = tracking.find_runs(client, exp, trial.key)
        assert len(runs) == 1 and runs[0].data.tags["arb.status"] == "finished", trial.task
        assert runs[0].info.status == "FINISHED"


def test_short_outage_is_waited_out(server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = GridSpec(name="blip", models=["llama3.2"], tasks=["math"], optimizer="none", demos=[0], n_labeled=[0],
                    n_val=1, n_eval=3, data="sample")  # fmt: skip
    [trial] = expand(spec, load_registry())
    exp = tracking.ensure_experiment(server.uri, "blip")
    _retries(monkeypatch, 7)  # 1 + 2 + ... + 64 s of patience: longer than a server restart
    server.stop()
    restart = threading.Timer(2.0, server.start)
    restart.start()
    try:
        with StubServer(["llama3.2"]) as stub:
            metrics = execute_trial(_config(trial, server.uri, exp, stub.url))
    finally:
        restart.join()
    assert metrics["reused"] == 0.0
    [run] = tracking.find_runs(MlflowClient(server.uri), exp, trial.key)
    assert run.data.tags["arb.status"] == "finished"
