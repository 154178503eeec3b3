"""deploy/slurm/arb.sbatch for real, under a fake SLURM (tests/slurm/fake_slurm.py) whose "nodes" are processes
on 127.0.0.1: the script builds a 3-node Ray cluster with token auth, an Ollama (the tests' stub, which starts
with no model) per node and an authenticated MLflow server, and a stub grid finishes on it. A first job is cut
the way SLURM cuts one at its time limit (SIGTERM to the batch shell, `--signal=B:TERM`); a second job resumes it,
and the study is read back afterwards from the shared filesystem with no server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainables import tracking

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "deploy/slurm/arb.sbatch", ROOT / "deploy/slurm/arb-node.sh", *(ROOT / "tests/slurm/bin").iterdir()]
GRID = (
    "name: slurm-stub\nmodels: [llama3.2, mistral]\ntasks: [math, qa, analysis]\noptimizer: none\ndemos: [0]\n"
    "n_labeled: [0]\nn_val: 1\nn_eval: 3\ndata: sample\nlm_cache: false\n"
)


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (scripts/debian-packages.sh test installs it)"
    proc = subprocess.run([shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_TRACKING", "SLURM_"))}
    return {
        **env,
        "PATH": f"{ROOT / 'tests/slurm/bin'}:{Path(sys.executable).parent}:{env['PATH']}",
        "ARB_HOME": str(tmp / "shared"),
        "ARB_VENV": str(Path(sys.executable).parents[1]),
        "FAKE_SLURM_STATE": str(tmp / "slurm-state"),
        "FAKE_SLURM_KILL_WAIT_S": "10",
        "FAKE_OLLAMA_CALL_S": "1.5",  # slow enough to cut the first job mid-sweep
        "ARB_OLLAMA_SLOTS": "1",  # 3 slots for 6 trials: two waves
    }


def _sbatch(tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["sbatch", "--nodes=3", "--wait", f"--output={tmp}/arb-%j.out",
                             "deploy/slurm/arb.sbatch", *args], cwd=ROOT, env=_env(tmp), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _trial_runs(store: str) -> list:
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("slurm-stub")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if tracking.TAG_KEY in r.data.tags]


def _job_processes(job: str, tmp: Path) -> list[str]:
    """Processes of a job still alive: its Ray nodes (temp dirs named after it), Ollamas, MLflow server."""
    out = subprocess.run(["pgrep", "-af", f"arb-ray-{job}-|fake_slurm.py (ollama|srun)|mlflow server.*{tmp}"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_sbatch_builds_the_cluster_runs_a_grid_and_a_second_job_resumes_it(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    store = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    first = _sbatch(tmp_path, str(grid))
    try:
        deadline = time.monotonic() + 600
        finished: list = []
        out = tmp_path / "arb-1001.out"
        while time.monotonic() < deadline and first.poll() is None:
            # only once arb has reached the job's MLflow server: before that the server may still be creating the
            # database's tables, and a second client migrating it at once breaks the migration
            if out.exists() and "→ MLflow experiment" in out.read_text():
                finished = [r for r in _trial_runs(store) if r.data.tags.get("arb.status") == "finished"]
                if finished:
                    break
            time.sleep(1)
        assert finished and first.poll() is None, first.communicate()[0]
        # SLURM's `--signal=B:TERM@300`: SIGTERM to the batch shell before the time limit
        subprocess.run(["scancel", "--batch", "--signal=TERM", "1001"], env=_env(tmp_path), check=True, timeout=30)
        first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            subprocess.run(["scancel", "1001"], env=_env(tmp_path), timeout=60)
            first.kill()
    log = (tmp_path / "arb-1001.out").read_text()
    assert first.returncode != 0, log
    # arb stopped cleanly (SIGTERM is its Ctrl-C) and the job says how to go on
    assert "the sweep stopped before every trial ended" in log and "exited with 2" in log, log
    assert f"sbatch --nodes=3 deploy/slurm/arb.sbatch {grid} resume" in log, log
    assert not _job_processes("1001", tmp_path)  # the job stopped its Ray nodes, Ollamas and MLflow server
    runs = _trial_runs(store)
    done_first = {r.data.tags[tracking.TAG_KEY] for r in runs if r.data.tags["arb.status"] == "finished"}
    assert 1 <= len(done_first) < 6, log

    second = _sbatch(tmp_path, str(grid), "resume")
    second.communicate(timeout=900)
    log = (tmp_path / "arb-1002.out").read_text()
    assert second.returncode == 0, log
    assert "3 node(s) joined" in log and f"{len(done_first)} of 6 trials already finished in MLflow: reused" in log
    assert not _job_processes("1002", tmp_path)
    runs = _trial_runs(store)  # read from the shared filesystem: no server is left
    keys = [r.data.tags[tracking.TAG_KEY] for r in runs]
    assert len(keys) == len(set(keys)) == 6, keys  # one run per trial key across both jobs
    assert all(r.data.tags["arb.status"] == "finished" and r.info.status == "FINISHED" for r in runs)

    # every node of both jobs: Ollama on loopback with the registry's window, the grid's models pulled (the stub
    # starts empty, so a trial could only succeed on a pulled model), and trials on more than one node
    reports = [json.loads(p.read_text()) for p in sorted((tmp_path / "slurm-state").glob("ollama-*.json"))]
    assert len(reports) == 6, reports
    assert all(r["env"]["OLLAMA_HOST"].startswith("127.0.0.1:") for r in reports)
    assert all(r["env"]["OLLAMA_CONTEXT_LENGTH"] == "8192" and r["env"]["OLLAMA_NUM_PARALLEL"] == "1" for r in reports)
    assert all(sorted(r["models"]) == ["llama3.2", "mistral"] for r in reports)
    assert len({r["port"] for r in reports[:3]}) == 3  # three nodes on one host: no port collides
    assert sum(1 for r in reports if r["calls"]) >= 2
    # Ray's token was on: generated into the shared directory, private
    token = tmp_path / "shared" / "slurm" / "secrets" / "ray_auth_token"
    assert token.stat().st_mode & 0o077 == 0 and len(token.read_text()) == 64

    # the study outlives the job: report from the shared filesystem, no server
    report = subprocess.run([sys.executable, "-m", "grid.cli", "report", "slurm-stub", "--tracking-uri", store,
                             "--out", str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=_env(tmp_path))  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report").is_dir() and any((tmp_path / "report").iterdir())
