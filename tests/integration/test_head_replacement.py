"""The study outlives its head: a sweep whose driver and tracking server die together (the head node is gone) is
resumed through a new tracking server process, at another address, on the same PostgreSQL database and artifact
store, as when a cluster is brought up again against durable storage. One run per trial key, and what the first
head wrote (runs, artifacts) is served by the second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from servers import MlflowServer, pg_bin, postgres
from stub_server import StubServer, table_responder

from trainables.record.schema import Tag

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)"),
]
ROOT = Path(__file__).resolve().parents[2]
MODELS = ("llama3.2", "mistral", "phi4")


def _slow(model: str, messages: list[dict[str, Any]]) -> str:
    time.sleep(0.3)  # slow enough that the head dies mid-sweep
    return table_responder({})(model, messages)


def _trials(uri: str) -> list[Any]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("head")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if Tag.KEY in r.data.tags]


def test_a_new_head_on_the_same_store_resumes_with_one_run_per_key(tmp_path: Path) -> None:
    with StubServer(list(MODELS), _slow) as stub, postgres() as database:
        registry = tmp_path / "models.yaml"
        registry.write_text("models:\n" + "".join(
            f"  {m}: {{provider: ollama, id: {m}, endpoint: '{stub.url}'}}\n" for m in MODELS))  # fmt: skip
        grid = tmp_path / "grid.yaml"
        grid.write_text("name: head\nmodels: [llama3.2, mistral, phi4]\ntasks: [math, qa]\noptimizer: none\n"
                        "n_eval: 6\ndata: sample\nmax_concurrent_trials: 1\nlm_cache: false\n")  # fmt: skip
        artifacts = tmp_path / "artifact-store"  # stands for the object store / volume that survives the head
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        old = MlflowServer(database, artifacts, tmp_path / "old-head.log")
        old.start()
        try:
            driver = subprocess.Popen(
                [sys.executable, "-m", "grid.cli", "run", str(grid), "--models", str(registry), "--tracking-uri",
                 old.uri], cwd=ROOT, env={**env, "ARB_HOME": str(tmp_path / "old-home")},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and driver.poll() is None:
                if any(r.data.tags.get("arb.status") == "finished" for r in _trials(old.uri)):
                    break
                time.sleep(0.5)
            assert driver.poll() is None, driver.communicate()[1]
            # the head goes: driver and tracking server at once, nothing flushed or closed
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        finally:
            old.stop()

        new = MlflowServer(database, artifacts, tmp_path / "new-head.log")  # another port: another head
        new.start()
        try:
            before = _trials(new.uri)
            finished_before = [r for r in before if r.data.tags["arb.status"] == "finished"]
            assert 1 <= len(finished_before) < 6
            resume = subprocess.run(
                [sys.executable, "-m", "grid.cli", "resume", "head", "--models", str(registry), "--tracking-uri",
                 new.uri], cwd=ROOT, env={**env, "ARB_HOME": str(tmp_path / "new-home")}, capture_output=True,
                text=True, timeout=900,
            )  # fmt: skip
            assert resume.returncode == 0, resume.stderr
            runs = _trials(new.uri)
            keys = [r.data.tags[Tag.KEY] for r in runs]
            assert len(keys) == len(set(keys)) == 6, keys
            assert all(r.data.tags["arb.status"] == "finished" and r.info.status == "FINISHED" for r in runs)
            assert {r.info.run_id for r in finished_before} <= {r.info.run_id for r in runs}  # kept, not redone
            # an artifact the first head stored is served by the second
            path = MlflowClient(new.uri).download_artifacts(finished_before[0].info.run_id, "examples.json",
                                                            str(tmp_path / "dl"))  # fmt: skip
            assert json.loads(Path(path).read_text())
        finally:
            new.stop()
