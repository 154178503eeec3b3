"""Ctrl-C during `arb run`: a clean stop (non-zero exit, a resume hint, no Ray left behind), then a resume that
finishes the grid with exactly one MLflow run per trial key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from stub_server import StubServer, table_responder

from trainables.record.schema import Tag


def _slow(answers: dict[str, str]) -> Any:
    inner = table_responder(answers)

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        time.sleep(0.2)  # long enough that the interrupt lands mid-sweep
        return inner(model, messages)

    return respond


def _raylets(driver: int) -> list[str]:
    """The raylets of the Ray instance a driver process started: Ray names its session directory after the
    starting process's pid (`session_<date>_<pid>`), so other tests' Ray instances, running beside this one under
    pytest-xdist, are not counted."""
    out = subprocess.run(["pgrep", "-af", "raylet/raylet"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"_{driver}/" in line or line.endswith(f"_{driver}")]


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path, known_answers: dict[str, str]) -> None:
    with StubServer(["llama3.2", "mistral", "phi4"], _slow(known_answers)) as stub:
        registry = tmp_path / "models.yaml"
        registry.write_text(
            "models:\n"
            + "".join(
                f"  {m}: {{provider: ollama, id: {m}, endpoint: '{stub.url}'}}\n"
                for m in ("llama3.2", "mistral", "phi4")
            )
        )
        grid = tmp_path / "grid.yaml"
        grid.write_text(
            "name: intr\nmodels: [llama3.2, mistral, phi4]\ntasks: [math]\noptimizer: none\nn_eval: 8\ndata: sample\n"
            "max_concurrent_trials: 1\n"
        )
        env = {**os.environ, "ARB_HOME": str(tmp_path / "home")}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-m", "grid.cli"]
        proc = subprocess.Popen(
            [*cmd, "run", str(grid), "--models", str(registry)], env=env, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "▶ start" in line:
                break
        time.sleep(1.0)
        assert _raylets(proc.pid), "the driver's own raylet is found while it runs"
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        output = "".join(lines) + rest
        assert proc.returncode != 0, output
        assert "arb resume intr" in output, output
        assert _raylets(proc.pid) == []  # Ray stopped with the driver

        done = subprocess.run(
            [*cmd, "resume", "intr", "--models", str(registry)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr

    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    client = MlflowClient(uri)
    trials = "tags.`arb.trial_key` != ''"  # not their evaluation runs
    runs = client.search_runs([client.get_experiment_by_name("intr").experiment_id], filter_string=trials)
    keys = [r.data.tags["arb.trial_key"] for r in runs]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert {r.data.tags["arb.status"] for r in runs} == {"finished"}


def test_trials_a_killed_job_left_running_are_marked_from_the_store(tmp_path: Path) -> None:
    """What deploy/slurm runs after `scancel` (every process signalled at once, the tracking server too): trials
    still RUNNING become errored "interrupted"; done runs, and runs that are not trials, are left alone."""
    from grid.interrupted import main
    from trainables.record import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "g")

    def run(key: str | None, status: str, parent: str | None = None) -> str:
        tags = {Tag.KEY: key, Tag.STATUS: status} if key else {}
        if parent:
            tags["mlflow.parentRunId"] = parent
        return client.create_run(exp, tags=tags).info.run_id

    cut = run("k1", tracking.RUNNING)
    child = run(None, "", parent=cut)
    done = run("k2", tracking.FINISHED)
    client.set_terminated(done)
    unclosed = run("k3", tracking.FINISHED)  # its process died between the status tag and closing the run
    race = run(None, "")
    assert main(["g", "--tracking-uri", uri]) == 0
    status = {r: client.get_run(r).info.status for r in (cut, child, done, unclosed, race)}
    assert status == {cut: "KILLED", child: "KILLED", done: "FINISHED", unclosed: "RUNNING", race: "RUNNING"}
    tags = client.get_run(cut).data.tags
    assert tags[Tag.STATUS] == tracking.ERRORED and tags["arb.error_class"] == "Interrupted"
    assert main(["g", "--tracking-uri", uri]) == 0 and main(["absent", "--tracking-uri", uri]) == 0
