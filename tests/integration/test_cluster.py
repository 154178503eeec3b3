"""A real multi-node Ray cluster on 127.0.0.1: a head and two GPU-less "GPU workers", each advertising Ollama
slots and the port of its own stub Ollama server (node label `arb-ollama-port`), all logging to an MLflow server
on PostgreSQL like cluster.yaml's head, with Ray's token authentication on and the token made the way cluster.yaml
makes it (`grid.cluster_secrets`). The driver is `arb` itself, in its own process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import MlflowServer, free_port, mlflow_on_postgres, pg_bin, ray_node, stop, wait_for_nodes
from stub_server import StubServer, table_responder

from grid import cluster_secrets
from trainables.record.schema import Tag

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)"),
]
ROOT = Path(__file__).resolve().parents[2]
MODELS, TASKS = ["llama3.2", "mistral"], ["math", "qa", "analysis"]
GRID = (
    "name: cluster\nmodels: [llama3.2, mistral]\ntasks: [math, qa, analysis]\noptimizer: none\ndemos: [0]\n"
    "n_labeled: [0]\nn_val: 1\nn_eval: 3\ndata: sample\n"
)
CALL_DELAY_S = 1.0  # slow enough that the driver can be killed mid-sweep


def _slow(model: str, messages: list[dict[str, Any]]) -> str:
    time.sleep(CALL_DELAY_S)
    return table_responder({})(model, messages)


@dataclass
class Cluster:
    address: str
    stubs: list[StubServer]
    nodes: list[subprocess.Popen[bytes]]
    mlflow: MlflowServer
    home: Path
    ray_env: dict[str, str]  # RAY_AUTH_MODE=token and the token file's path: what cluster.yaml's ray.env holds

    def env(self, ray_env: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("RAY_AUTH")}
        ray_env = self.ray_env if ray_env is None else ray_env
        return {**env, **ray_env, "RAY_ADDRESS": self.address, "ARB_HOME": str(self.home)}

    def arb(self, *args: str, ray_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "grid.cli", *args, "--tracking-uri", self.mlflow.uri],
                                cwd=ROOT, env=self.env(ray_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip

    def calls(self) -> int:
        return sum(s.state.calls.total() for s in self.stubs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    port = free_port()
    ray_env = cluster_secrets.read_env(cluster_secrets.write_ray_token(tmp / "secrets"))
    with mlflow_on_postgres(tmp) as mlflow, StubServer(MODELS, _slow) as stub_a, StubServer(MODELS, _slow) as stub_b:
        head = ["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
        nodes = [ray_node(head, tmp / "head.log", ray_env)]
        try:
            address = f"127.0.0.1:{port}"
            wait_for_nodes(address, 1, ray_env=ray_env)
            for i, stub in enumerate((stub_a, stub_b)):  # one at a time: two raylets registering at once time out
                nodes.append(ray_node([f"--address={address}", "--num-cpus=2", '--resources={"ollama_slots": 2}',
                                        f"--labels=arb-ollama-port={stub.port}"], tmp / f"worker{i}.log",
                                       ray_env))  # fmt: skip
                wait_for_nodes(address, 2 + i, ray_env=ray_env)
            grid = tmp / "cluster.yaml"
            grid.write_text(GRID)
            yield Cluster(address, [stub_a, stub_b], nodes, mlflow, tmp, ray_env)
        finally:
            for node in reversed(nodes):
                stop(node)


def _runs(cluster: Cluster, grid: str = "cluster") -> list[Any]:
    client = MlflowClient(cluster.mlflow.uri)
    exp = client.get_experiment_by_name(grid)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if Tag.KEY in r.data.tags]


def test_sigkill_driver_then_resume_and_rerun(cluster: Cluster) -> None:
    grid = str(cluster.home / "cluster.yaml")
    driver = cluster.arb("run", grid)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill once some trials are finished and others are not
        done = [r for r in _runs(cluster) if r.data.tags.get("arb.status") == "finished"]
        if len(done) >= 2 or driver.poll() is not None:
            break
        time.sleep(1)
    assert driver.poll() is None, driver.communicate()
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = {r.data.tags[Tag.KEY] for r in _runs(cluster) if r.data.tags["arb.status"] == "finished"}
    assert 2 <= len(finished_before) < 6

    resume = cluster.arb("resume", "cluster")
    out, err = resume.communicate(timeout=900)
    assert resume.returncode == 0, err
    runs = _runs(cluster)
    keys = [r.data.tags[Tag.KEY] for r in runs]
    assert len(keys) == len(set(keys)) == 6  # every trial key: exactly one run
    assert all(r.data.tags["arb.status"] == "finished" and r.info.status == "FINISHED" for r in runs)
    # every LM call went to a worker's own Ollama (the registry's default endpoint has no server here)
    assert cluster.calls() >= 6 * 3

    # a finished grid: no LM call at all, the same metrics
    before = {r.data.tags[Tag.KEY]: r.data.metrics["baseline_score"] for r in runs}
    calls = cluster.calls()
    start = time.monotonic()
    again = cluster.arb("run", grid)
    out, err = again.communicate(timeout=600)
    seconds = time.monotonic() - start
    assert again.returncode == 0, err
    assert cluster.calls() == calls
    assert json.loads(out.splitlines()[0])["reused"] == 6
    after = {r.data.tags[Tag.KEY]: r.data.metrics["baseline_score"] for r in _runs(cluster)}
    assert after == before
    (cluster.home / "rerun-seconds.txt").write_text(f"{seconds:.1f}\n")


def test_a_client_without_the_clusters_token_is_refused(cluster: Cluster) -> None:
    """Ray's token auth on a real multi-node cluster: `arb run` with no token, or with another cluster's, gets one
    error line naming the fix and exit 2; no trial starts. (The other tests here run with the token.)"""
    grid = cluster.home / "refused.yaml"
    grid.write_text(GRID.replace("name: cluster", "name: cluster-refused"))
    calls = cluster.calls()
    other = cluster_secrets.read_env(cluster_secrets.write_ray_token(cluster.home / "other-cluster"))
    empty_home = cluster.home / "no-token-home"  # Ray also looks for ~/.ray/auth_token
    empty_home.mkdir()
    # A refused client hears "Failed to connect" only after Ray has tried the GCS NUM_REDIS_GET_RETRIES times, about
    # a second apart (20 by default: ray/_private/node.py, get_gcs_client); on loopback 3 tries say the same sooner.
    retries = {"RAY_NUM_REDIS_GET_RETRIES": "3"}
    for ray_env in ({"RAY_AUTH_MODE": "token", "HOME": str(empty_home)}, other, {"RAY_AUTH_MODE": "disabled"}):
        proc = cluster.arb("run", str(grid), ray_env={**ray_env, **retries})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        lines = [line for line in err.splitlines() if line.startswith("arb: error:")]
        assert len(lines) == 1 and "Ray cluster at 127.0.0.1" in lines[0] and "RAY_AUTH_TOKEN_PATH" in lines[0], err
    assert cluster.calls() == calls
    exp = MlflowClient(cluster.mlflow.uri).get_experiment_by_name("cluster-refused")
    assert exp is None or not MlflowClient(cluster.mlflow.uri).search_runs([exp.experiment_id])


def test_each_node_loads_each_model_once(cluster: Cluster) -> None:
    """2 models × 3 tasks on 2 nodes of 2 slots: the minimum is one load per model, one model per node."""
    grid = cluster.home / "loads.yaml"
    grid.write_text(GRID.replace("name: cluster", "name: cluster-loads") + "lm_cache: false\n")
    for stub in cluster.stubs:
        with stub.state.lock:
            stub.state.loaded.clear()
            stub.state.loads.clear()
    driver = cluster.arb("run", str(grid))
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    loads = [dict(stub.state.loads) for stub in cluster.stubs]
    assert sorted(m for per_node in loads for m in per_node) == sorted(MODELS), loads
    assert all(list(per_node.values()) == [1] for per_node in loads), loads


def test_check_asks_every_node_for_its_models(cluster: Cluster) -> None:
    """`arb check` on a cluster: each Ollama node answers for itself through a Ray task pinned to it; a model that
    no node has is one line per node, exit 2, and no trial starts."""
    grid = cluster.home / "check.yaml"
    grid.write_text(GRID.replace("name: cluster", "name: cluster-check").replace("[llama3.2, mistral]", "[phi4]"))
    calls = cluster.calls()
    proc = subprocess.run([sys.executable, "-m", "grid.cli", "check", str(grid)], cwd=ROOT, env=cluster.env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    missing = [line for line in proc.stderr.splitlines() if "does not have model 'phi4'" in line]
    ports = {str(stub.port) for stub in cluster.stubs}
    assert len(missing) == 2 and {re.search(r"http://127\.0\.0\.1:(\d+)", line)[1] for line in missing} == ports
    ok = subprocess.run([sys.executable, "-m", "grid.cli", "check", str(cluster.home / "cluster.yaml")], cwd=ROOT,
                        env=cluster.env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert cluster.calls() == calls  # checking asks /api/tags and /api/show, never a chat


CROSS_NODE = """
import json, ray
from pathlib import Path
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
from trainables.lm import cache
ray.init(address="auto", log_to_driver=False)
service = cache.start_service(Path(__import__("sys").argv[1]))
workers = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("ollama_slots"))

@ray.remote(num_cpus=0)
def put(key):
    cache.install(Path("unused"))
    store = __import__("dspy").cache.disk_cache
    store.set(key, {"answer": 42})
    return ray.get_runtime_context().get_node_id(), store.get(key)

@ray.remote(num_cpus=0)
def get(key):
    cache.install(Path("unused"))
    return ray.get_runtime_context().get_node_id(), __import__("dspy").cache.disk_cache.get(key)

wrote = ray.get(put.options(scheduling_strategy=On(workers[0], soft=False)).remote("k"))
read = ray.get(get.options(scheduling_strategy=On(workers[1], soft=False)).remote("k"))
saved = cache.stop_service(service)
print(json.dumps({"nodes": [wrote[0], read[0]], "workers": workers, "read": read[1], "saved": saved}))
"""


def _two_nodes_share_the_service(cluster: Cluster) -> None:
    """An entry written by a task on one worker node is read by a task on the other, through the head's service
    (with the service, `install` never opens the directory it is given)."""
    snapshot = cluster.home / "cross-node.tar"
    proc = subprocess.run([sys.executable, "-c", CROSS_NODE, str(snapshot)], cwd=ROOT, env=cluster.env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["nodes"] == out["workers"] and len(set(out["nodes"])) == 2
    assert out["read"] == {"answer": 42} and out["saved"] == 1 and snapshot.is_file()


def test_the_lm_cache_is_one_service_on_the_head_not_sqlite_on_the_shared_home(cluster: Cluster) -> None:
    """Two students of one task, one per node, with the same teacher: the second trial's teacher calls are answered
    from the first's, though the nodes share nothing but the head (each its own Ollama, its own Ray temp dir). The
    entries live in one actor on the head; `$ARB_HOME` (the shared directory) gets one file at the end, never a
    SQLite database, and a second session reads it back."""
    grid = cluster.home / "cache.yaml"
    grid.write_text(
        "name: cluster-cache\nmodels: [llama3.2, mistral]\ntasks: [math]\noptimizer: bootstrap\nteacher: llama3.2\n"
        "demos: [2]\nn_labeled: [6]\nn_val: 2\nn_eval: 3\ndata: sample\nmax_concurrent_trials: 1\n"
    )
    before = [dict(stub.state.calls) for stub in cluster.stubs]
    driver = cluster.arb("run", str(grid))
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    sent = [
        {m: stub.state.calls[m] - calls.get(m, 0) for m in MODELS}
        for stub, calls in zip(cluster.stubs, before, strict=True)
    ]
    runs = {r.data.params["model"]: r for r in _runs(cluster, "cluster-cache")}
    assert set(runs) == {"llama3.2", "mistral"}
    # every llama3.2 call any node's Ollama answered was the llama3.2 trial's: the mistral trial's teacher calls
    # (the same prompts: the teacher runs the task's program on the same training examples) were all cache hits
    first, second = runs["llama3.2"].data.metrics, runs["mistral"].data.metrics
    assert sum(per["llama3.2"] for per in sent) == first["lm_calls"] - first["cache_hits"], sent
    assert second["teacher_lm_calls"] > 0 and second["cache_hits"] >= second["teacher_lm_calls"]
    _two_nodes_share_the_service(cluster)
    assert (cluster.home / "cache" / "lm-cluster.tar").is_file() and not (cluster.home / "cache" / "lm").exists()
    assert not [p for p in (cluster.home / "cache").rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]
    # another session (a new grid name, the same work) starts from the saved entries: no LM call at all
    again = cluster.home / "cache-again.yaml"
    again.write_text(grid.read_text().replace("cluster-cache", "cluster-cache-again"))
    calls = cluster.calls()
    driver = cluster.arb("run", str(again))
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    assert cluster.calls() == calls


def test_a_vllm_model_runs_only_on_the_node_that_serves_it(cluster: Cluster) -> None:
    """A third node serving one model through vLLM (a vLLM-like stub; node labels `arb-vllm-model` and
    `arb-vllm-port`, as deploy/slurm's ARB_ENGINE=vllm sets them) joins the cluster: that model's trials are
    placed there, and reach its server through the port label (the registry's endpoint is a closed port, so a trial
    placed anywhere else would fail). `arb check` of a vLLM model no node serves is one line, exit 2."""
    models = cluster.home / "vllm-models.yaml"
    entry = {"provider": "vllm", "endpoint": "http://127.0.0.1:9/v1", "context": 2048, "max_tokens": 256}
    models.write_text(yaml.safe_dump({"models": {"llama-vllm": {**entry, "id": "served-llama"},
                                                 "other-vllm": {**entry, "id": "other-llama"}}}))  # fmt: skip
    grid = cluster.home / "vllm.yaml"
    grid.write_text(GRID.replace("name: cluster", "name: cluster-vllm").replace("[llama3.2, mistral]", "[llama-vllm]"))
    with StubServer(["served-llama"], table_responder({}), flavor="vllm") as vllm:  # type: ignore[arg-type]
        labels = f"--labels=arb-vllm-model=served-llama,arb-vllm-port={vllm.port}"
        node = ray_node([f"--address={cluster.address}", "--num-cpus=2", labels], cluster.home / "vllm-node.log",
                        cluster.ray_env)  # fmt: skip
        try:
            wait_for_nodes(cluster.address, len([n for n in cluster.nodes if n.poll() is None]) + 1,
                           ray_env=cluster.ray_env)  # fmt: skip
            ollama_calls = cluster.calls()
            driver = cluster.arb("run", str(grid), "--models", str(models))
            _, err = driver.communicate(timeout=900)
            assert driver.returncode == 0, err
            runs = _runs(cluster, "cluster-vllm")
            assert len(runs) == 3 and all(r.data.tags["arb.status"] == "finished" for r in runs), err
            assert vllm.state.calls["served-llama"] >= 9 and cluster.calls() == ollama_calls
            unserved = cluster.home / "vllm-other.yaml"
            unserved.write_text(grid.read_text().replace("name: cluster-vllm", "name: cluster-vllm-other")
                                .replace("[llama-vllm]", "[other-vllm]"))  # fmt: skip
            command = [sys.executable, "-m", "grid.cli", "check", str(unserved), "--models", str(models)]
            check = subprocess.run(command, cwd=ROOT, env=cluster.env(), capture_output=True, text=True, timeout=300)
            assert check.returncode == 2 and "no node serves vllm model 'other-llama'" in check.stderr, check.stderr
        finally:
            stop(node)


def test_worker_killed_mid_trial_its_trials_finish_elsewhere(cluster: Cluster) -> None:
    """Runs last in this module: it leaves the cluster with one worker."""
    grid = cluster.home / "kill.yaml"
    grid.write_text(GRID.replace("name: cluster", "name: cluster-kill") + "lm_cache: false\n")
    victim, survivor = cluster.stubs
    before = victim.state.calls.total()
    driver = cluster.arb("run", str(grid))
    deadline = time.monotonic() + 600
    while victim.state.calls.total() == before and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert victim.state.calls.total() > before, "no trial reached the first worker"
    os.killpg(cluster.nodes[1].pid, signal.SIGKILL)  # the first worker node, mid-trial
    cluster.nodes[1].wait()
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    client = MlflowClient(cluster.mlflow.uri)
    exp = client.get_experiment_by_name("cluster-kill")
    runs = [r for r in client.search_runs([exp.experiment_id]) if Tag.KEY in r.data.tags]
    keys = [r.data.tags[Tag.KEY] for r in runs]
    assert len(keys) == len(set(keys)) == 6  # the interrupted trial reused its run on the other node
    assert all(r.data.tags["arb.status"] == "finished" for r in runs)
    assert survivor.state.calls.total() > 0
