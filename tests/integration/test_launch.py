"""A grid through real Ray Tune against the stub Ollama server: progress, MLflow runs, and a re-run that is free."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from grid.launch import run_grid, stored_spec, summary_line, tune_state
from grid.spec import load_grid
from trainables.record import tracking
from trainables.registry import load_registry


def test_grid_runs_on_ray_and_rerun_makes_no_lm_calls(tmp_path: Path, stub: StubServer, tracking_uri: str) -> None:
    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(
        "models:\n"
        f"  llama3.2: {{provider: ollama, id: llama3.2, endpoint: '{stub.url}'}}\n"
        f"  qwen3:4b: {{provider: ollama, id: 'qwen3:4b', endpoint: '{stub.url}'}}\n"
    )
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        "name: raygrid\nmodels: [llama3.2, 'qwen3:4b']\ntasks: [math]\noptimizer: bootstrap\ndemos: [1]\n"
        "n_labeled: [3]\nn_val: 2\nn_eval: 4\ndata: sample\nmax_concurrent_trials: 2\n"
    )
    spec, registry = load_grid(grid_file), load_registry(registry_file)
    log = io.StringIO()
    outcome = run_grid(spec, registry, tracking_uri, tmp_path / "home", registry_path=str(registry_file), stream=log)
    assert outcome.failed == [] and not outcome.interrupted and len(outcome.statuses) == 2
    assert "[2/2]" in log.getvalue()
    assert json.loads(summary_line(outcome)) == {
        "trials": 2, "finished": 2, "compile_failed": 0, "errored": 0, "reused": 0
    }  # fmt: skip
    calls = stub.state.calls.total()
    assert calls > 0
    assert tune_state(tmp_path / "home", "raygrid") == "2 terminated"  # what `arb status` shows next to MLflow's
    assert tune_state(tmp_path / "home", "never-ran") == "-"
    # the node's LM cache is in the sweep's home, not in a trial's working directory (Tune chdirs into one)
    assert any((tmp_path / "home" / "cache" / "lm").iterdir())

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("raygrid")
    trials = "tags.`arb.trial_key` != ''"  # not their evaluation runs
    runs = client.search_runs([exp.experiment_id], filter_string=trials)
    assert len(runs) == 2 and {r.data.tags["arb.status"] for r in runs} == {"finished"}

    # what `arb resume raygrid` does: read the spec back from MLflow and run again
    again_spec, again_registry = stored_spec(tracking_uri, "raygrid")
    assert again_spec == spec and again_registry == str(registry_file)
    outcome = run_grid(again_spec, registry, tracking_uri, tmp_path / "home", stream=io.StringIO())
    assert outcome.reused == 2
    assert stub.state.calls.total() == calls
    assert len(client.search_runs([exp.experiment_id], filter_string=trials)) == 2
    assert all(len(tracking.find_runs(client, exp.experiment_id, r.data.tags["arb.trial_key"])) == 1 for r in runs)


def test_a_sweep_that_keeps_failing_the_same_way_stops_once_and_resumably(
    tmp_path: Path, tracking_uri: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every call fails (the server answers 500): after three trials with the same error the sweep stops, says so
    once, and leaves the rest pending for `arb resume`; each failed trial is one line, with no traceback of Ray's or
    Tune's on the console; Ray's trial folders are short (model, task, key)."""
    from grid.progress import GridOutcome, error_signature

    with StubServer(["llama3.2"]) as stub:
        stub.state.fault_always = "500"
        registry_file = tmp_path / "models.yaml"
        registry_file.write_text(
            f"models:\n  llama3.2: {{provider: ollama, id: llama3.2, endpoint: '{stub.url}', retries: 0}}\n"
        )
        grid_file = tmp_path / "grid.yaml"
        grid_file.write_text(
            "name: failing\nmodels: [llama3.2]\ntasks: [math]\noptimizer: none\ndemos: [0]\nn_labeled: [0]\n"
            "seeds: [0, 1, 2, 3, 4, 5]\nn_val: 1\nn_eval: 2\ndata: sample\nmax_concurrent_trials: 1\nlm_cache: false\n"
        )
        spec, registry = load_grid(grid_file), load_registry(registry_file)
        log = io.StringIO()
        outcome = run_grid(spec, registry, tracking_uri, tmp_path / "home", registry_path=str(registry_file),
                           stream=log)  # fmt: skip
    text = log.getvalue()
    console = capfd.readouterr().err
    assert "Traceback" not in console and "Unhandled error" not in console, console[-3000:]
    assert "Trials did not complete" not in console
    assert text.count("errored") >= len(outcome.failed)
    assert outcome.repeated_error is not None and outcome.interrupted
    assert len(outcome.failed) >= 3 and len(outcome.statuses) < 6
    assert text.count("stopping the sweep") == 1 and "arb resume failing" in text
    assert "no error recorded" not in text and "InternalServerError" in outcome.repeated_error
    folders = [p.name for p in (tmp_path / "home" / "ray" / "failing").iterdir() if p.is_dir()]
    assert folders and all(name.startswith("llama3.2-math-") and len(name) < 60 for name in folders)
    # names and numbers do not make errors different; another kind of error does
    assert error_signature("ArbError: cannot load 'google/boolq' (train)") == error_signature(
        "ArbError: cannot load 'openai/gsm8k' (train)"
    )
    odd = GridOutcome(total=10)
    for i, line in enumerate(["A: x", "B: y", "A: z", "C: w"]):
        odd.statuses[str(i)] = "errored"
        assert not odd.note_error(str(i), line)  # never three of one kind
