"""Structured outputs (grid axis `structured`): the schema reaches each kind of server in its own dialect, the JSON
answers are scored like text ones, and the setting is part of the trial key and the MLflow record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import expected_baseline
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from grid.spec import GridSpec, Trial, expand, trial_key
from trainables.record import tracking
from trainables.registry import ModelRegistry, load_registry
from trainables.trial import execute_trial


def _trials(model: str) -> dict[bool, Trial]:
    spec = GridSpec(
        name="structured", phase="test", models=[model], tasks=["math"], optimizer="none", demos=[0],
        n_labeled=[0], n_val=1, n_eval=8, data="sample", structured=[False, True],
    )  # fmt: skip
    return {t.structured: t for t in expand(spec, ModelRegistry.model_validate(_registry_with_embedded()))}


def _registry_with_embedded() -> dict[str, Any]:
    """The shipped registry plus an embedded entry whose server is the stub (it answers for model id llama3.2)."""
    data = load_registry().model_dump()
    data["models"]["tiny-embedded"] = {**data["models"]["smollm2"], "id": "llama3.2"}
    return data


@pytest.mark.parametrize(
    ("model", "path", "shape"),
    [
        ("tiny-embedded", "/v1", "llama.cpp"),  # llama-server: json_object + schema (a grammar)
        ("gpt-4o", "/v1", "openai"),  # OpenAI structured outputs: json_schema, strict
        ("llama3.2", "", "ollama"),  # Ollama's native API: format = schema
    ],
)
def test_structured_trial_sends_the_schema_in_the_servers_dialect_and_scores_json(
    model: str, path: str, shape: str, stub: StubServer, tracking_uri: str, math_splits: Any,
    known_answers: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
    trial = _trials(model)[True]
    exp = tracking.ensure_experiment(tracking_uri, trial.grid)
    runtime = {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {model: stub.url + path},
               "registry": _registry_with_embedded()}  # fmt: skip
    metrics = execute_trial({"trial": trial.model_dump(), "runtime": runtime})

    assert metrics["baseline_score"] == pytest.approx(expected_baseline(math_splits, known_answers))
    assert metrics["parse_failures_baseline"] == 0 and metrics["lm_calls"] == 8
    assert len(stub.state.schemas) == 8
    assert all(set(s["properties"]) == {"reasoning", "answer"} for s in stub.state.schemas)
    bodies = [json.loads(b) for b in stub.state.bodies if '"messages"' in b]
    if shape == "llama.cpp":
        assert all(b["response_format"]["type"] == "json_object" for b in bodies)
    elif shape == "openai":
        assert all(b["response_format"]["json_schema"]["strict"] is True for b in bodies)
    else:
        assert all(isinstance(b["format"], dict) for b in bodies)

    run = tracking.find_runs(MlflowClient(tracking_uri), exp, trial.key)[0]
    assert run.data.params["structured"] == "true"
    assert run.info.run_name.endswith(" · json")


def test_text_trials_send_no_schema(stub: StubServer, tracking_uri: str) -> None:
    trial = _trials("llama3.2")[False]
    exp = tracking.ensure_experiment(tracking_uri, trial.grid)
    runtime = {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {"llama3.2": stub.url}}
    metrics = execute_trial({"trial": trial.model_dump(), "runtime": runtime})
    assert metrics["lm_calls"] == 8 and stub.state.schemas == []


def test_structured_is_in_the_key_and_old_keys_stay_valid() -> None:
    text, structured = _trials("llama3.2")[False], _trials("llama3.2")[True]
    assert text.key != structured.key
    # The point of a text trial is exactly the key it had before the axis existed: its MLflow runs are adopted.
    old = trial_key(model="llama3.2", task="math", task_version=text.task_version, optimizer="none", teacher=None,
                    demos=0, n_labeled=0, seed=0)  # fmt: skip
    assert text.point_key == old
    assert GridSpec(name="g", models=["a"], tasks=["math"], structured=[False, True]).size == 2
    with pytest.raises(ValueError, match="duplicates"):
        GridSpec(name="g", models=["a"], tasks=["math"], structured=[True, True])
