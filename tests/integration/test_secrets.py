"""A planted API key must leave no trace: not in MLflow, its artifacts, Ray's results and logs, or saved programs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from stub_server import StubServer

from grid.launch import run_grid
from grid.spec import load_grid
from trainables.registry import load_registry

CANARY = "sk-CANARY-7f3a9c1e5b2d4680aa11"


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def test_planted_key_never_reaches_results(
    tmp_path: Path, stub: StubServer, monkeypatch: pytest.MonkeyPatch, arb_home: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    home = tmp_path / "home"
    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(
        "models:\n"
        f"  gpt-4o: {{provider: openai, id: gpt-4o, api_key_env: OPENAI_API_KEY, endpoint: '{stub.url}/v1',"
        " input_usd_per_mtok: 2.5, output_usd_per_mtok: 10}\n"
    )
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        "name: canary\nmodels: [gpt-4o]\ntasks: [math]\noptimizer: bootstrap\ndemos: [1]\nn_labeled: [3]\n"
        "n_val: 2\nn_eval: 3\ndata: sample\n"
    )
    uri = f"sqlite:///{home / 'mlflow.db'}"
    home.mkdir()
    outcome = run_grid(load_grid(grid_file), load_registry(registry_file), uri, home, stream=io.StringIO())
    assert outcome.failed == [] and stub.state.calls["gpt-4o"] > 0
    # the key did travel where it must: to the API, as a bearer token (so the test is not vacuous)
    assert f"Bearer {CANARY}" in stub.state.auth_headers

    # traces of the LM calls (with the LM's settings as span attributes) and the logged program are in the store,
    # so the scan below covers them
    import mlflow

    exp = mlflow.MlflowClient(uri).get_experiment_by_name("canary")
    assert exp is not None
    mlflow.set_tracking_uri(uri)
    traces = mlflow.search_traces(locations=[exp.experiment_id], return_type="list")
    assert len(traces) == 6 and any(sp.span_type == "CHAT_MODEL" for t in traces for sp in t.data.spans)
    assert list((home / "artifacts").rglob("model.pkl"))  # the program as an MLflow model (pickled DSPy settings)
    needle = CANARY.encode()
    assert _files_containing(home, needle) == []  # MLflow db (traces included) + artifacts, Ray results, logs
    lm_cache = home / "cache" / "lm"  # where the trial workers keep LM responses (the sweep's home)
    assert any(p.is_file() for p in lm_cache.rglob("*")) and _files_containing(lm_cache, needle) == []
    ray_logs = Path("/tmp/ray/session_latest/logs")
    if ray_logs.exists():
        assert _files_containing(ray_logs, needle) == []
    assert all(CANARY not in body for body in stub.state.bodies)  # request bodies never carry it either
