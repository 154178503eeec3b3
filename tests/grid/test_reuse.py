"""Same key, same work: the trial key covers the settings the work depends on; runs recorded before it did are
reused where their settings are the grid's and refused where they differ."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from grid.reuse import settle
from grid.spec import GridSpec, expand
from trainables.errors import ArbError
from trainables.record import tracking
from trainables.record.schema import Tag
from trainables.registry import load_registry
from trainables.trial import execute_trial
from trainables.vocabulary import Trial


def _spec(**over: Any) -> GridSpec:
    fields: dict[str, Any] = {"name": "keys", "phase": "test", "models": ["llama3.2"], "tasks": ["math"],
                              "optimizer": "bootstrap", "demos": [2], "n_labeled": [6], "n_val": 3, "n_eval": 8,
                              "data": "sample"}  # fmt: skip
    return GridSpec(**{**fields, **over})


def test_two_grids_that_differ_in_the_work_plan_different_keys() -> None:
    """The issue's case: the same point with sample data and 10 examples, or the hub, 500 and `auto: heavy`."""
    registry = load_registry()
    small = _spec(models=["gpt-4o"], optimizer="mipro", n_labeled=[40], n_eval=10, n_val=10)
    full = _spec(models=["gpt-4o"], optimizer="mipro", n_labeled=[40], n_eval=500, n_val=30, data="hub",
                 optimizer_params={"auto": "heavy"})  # fmt: skip
    [a], [b] = expand(small, registry), expand(full, registry)
    assert a.point_key == b.point_key and a.key != b.key
    for changed in ({"n_eval": 11}, {"n_val": 11}, {"data": "hub"}, {"optimizer_params": {"auto": "medium"}}):
        [c] = expand(small.model_copy(update=changed), registry)
        assert c.key != a.key, changed
    # a default written out is the same work as a default left out
    [light] = expand(small.model_copy(update={"optimizer_params": {"auto": "light"}}), registry)
    assert light.key == a.key and a.optimizer_params == {"auto": "light"}


def _config(trial: Trial, uri: str, url: str) -> dict[str, Any]:
    exp = tracking.ensure_experiment(uri, trial.grid)
    return {"trial": trial.model_dump(), "runtime": {"tracking_uri": uri, "experiment_id": exp,
                                                     "endpoints": {"llama3.2": url}}}  # fmt: skip


def _record_as_before(trial: Trial, uri: str, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The trial run as the code before this change recorded it: its key was the grid point (the same hash of the
    same fields), it had no point tag, and its optimizer params were the grid's, without defaults."""
    before = trial.model_copy(update={"optimizer_params": {}})
    with monkeypatch.context() as m:
        m.setattr(Trial, "key", property(lambda t: t.point_key))
        m.setattr(Tag, "POINT", "arb.unused")  # no point tag in the old record
        execute_trial(_config(before, uri, url))
    client = MlflowClient(uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name(trial.grid).experiment_id, trial.point_key)
    assert "arb.point_key" not in run.data.tags and run.data.params["optimizer_params"] == "{}"
    return str(run.info.run_id)


def test_a_run_recorded_before_is_reused_for_an_unchanged_grid(
    stub: StubServer, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [trial] = expand(_spec(), load_registry())
    old_id = _record_as_before(trial, tracking_uri, stub.url, monkeypatch)
    calls = dict(stub.state.calls)

    assert settle(tracking_uri, "keys", [trial]) == {trial.key: "finished"}
    metrics = execute_trial(_config(trial, tracking_uri, stub.url))
    assert metrics["reused"] == 1.0 and stub.state.calls == calls  # 0 LM calls
    client = MlflowClient(tracking_uri)
    run = client.get_run(old_id)
    assert run.data.tags["arb.trial_key"] == trial.key and run.data.tags["arb.point_key"] == trial.point_key
    assert settle(tracking_uri, "keys", [trial]) == {trial.key: "finished"}  # adopted once, found by key since


def test_a_changed_n_eval_under_an_old_key_is_refused_in_one_line(
    stub: StubServer, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [trial] = expand(_spec(), load_registry())
    _record_as_before(trial, tracking_uri, stub.url, monkeypatch)
    [changed] = expand(_spec(n_eval=6), load_registry())
    with pytest.raises(ArbError) as err:
        settle(tracking_uri, "keys", [changed])
    text = str(err.value)
    assert "\n" not in text and "n_eval 8 → 6" in text and "new `name`" in text
    # nor is a run under the new key taken for other settings of the same point
    assert settle(tracking_uri, "keys", [trial]) == {trial.key: "finished"}
    with pytest.raises(ArbError, match="n_eval 8 → 6"):
        settle(tracking_uri, "keys", [changed])


def test_status_says_when_runs_were_made_with_other_settings(
    stub: StubServer, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis.runs import grid_status

    [trial] = expand(_spec(), load_registry())
    _record_as_before(trial, tracking_uri, stub.url, monkeypatch)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("keys").experiment_id
    client.set_experiment_tag(exp, "arb.grid_spec", _spec().model_dump_json())
    assert grid_status(tracking_uri, ["keys"])["settings"].tolist() == ["as the grid"]
    # what a store made before keys covered n_eval holds after the grid file changed: the spec says 6, the run 8
    client.set_experiment_tag(exp, "arb.grid_spec", _spec(n_eval=6).model_dump_json())
    assert grid_status(tracking_uri, ["keys"])["settings"].tolist() == ["differ: n_eval in 1 run(s) (grid: 6)"]
