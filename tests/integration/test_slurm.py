"""deploy/slurm under a real Slurm (Debian's slurm-wlm: slurmctld and two slurmd on 127.0.0.1, munge; see
tests/slurm/real_slurm.py), jobs submitted by an unprivileged user, the tests' Ollama look-alike as `ollama`.

One study goes through the five ways a job ends: cut by `scancel --batch --signal=TERM` (what `--signal=B:TERM`
does before a time limit), cut by a plain `scancel`, stopped by a real `--time` limit, requeued by `scontrol
requeue` and then run to the end. After each: no process of the user and no temp dir left, no trial left RUNNING
in MLflow, at most one run per trial key; at the end every trial is FINISHED once, and the resumed jobs' trials
were served from the LM cache for the calls the cut jobs made (each job's Ollamas listen on new ports).

Nothing here runs under a fake SLURM any more: everything the fake modelled, real Slurm does on one host. What
real Slurm on one host cannot show: nodes on separate machines (all share this host's address and /tmp) and
cgroup process tracking (not delegated in a container: proctrack/linuxproc instead)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainables.record import tracking

sys.path.insert(0, str(Path(__file__).parents[1] / "slurm"))
import real_slurm

from trainables.record.schema import Tag

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "deploy/slurm/arb.sbatch", ROOT / "deploy/slurm/arb-node.sh", ROOT / "deploy/slurm/submit",
           ROOT / "tests/slurm/bin/ollama", ROOT / "tests/slurm/bin/vllm"]  # fmt: skip
GRID = (
    "name: slurm-stub\nmodels: [llama3.2, mistral]\ntasks: [math, qa, analysis]\noptimizer: none\ndemos: [0]\n"
    "n_labeled: [0]\nn_val: 1\nn_eval: 4\ndata: sample\nlm_cache: true\n"
)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (scripts/debian-packages.sh test installs it)"
    proc = subprocess.run([shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


class Study:
    """A real Slurm, a working directory the unprivileged user owns, and how to submit and watch its jobs."""

    def __init__(self, slurm: real_slurm.RealSlurm, work: Path, user: str) -> None:
        self.slurm, self.work, self.user = slurm, work, user
        self.grid = work / "grid.yaml"
        self.store = f"sqlite:///{work / 'shared' / 'mlflow.db'}"

    def env(self) -> dict[str, str]:
        venv_bin = Path(sys.executable).parent
        return {
            "PATH": f"{ROOT / 'tests/slurm/bin'}:{venv_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": f"/home/{self.user}", "USER": self.user, "LANG": "C.UTF-8",
            "SLURM_CONF": str(self.slurm.conf),
            "ARB_HOME": str(self.work / "shared"),
            "ARB_VENV": str(venv_bin.parent),
            "FAKE_OLLAMA_STATE": str(self.work / "ollama"),
            "FAKE_OLLAMA_CALL_S": "2",  # slow enough to cut a sweep mid-run
            "ARB_OLLAMA_SLOTS": "1",  # 2 slots for 6 trials: three waves
        }  # fmt: skip

    def as_user(self, *command: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        env = [f"{k}={v}" for k, v in {**self.env(), **extra}.items()]
        return subprocess.run(["runuser", "-u", self.user, "--", "env", "-i", *env, *command], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def sbatch(self, *args: str, **extra: str) -> str:
        proc = self.as_user("sbatch", "--parsable", f"--output={self.work}/arb-%j.out", *args, **extra)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job: str) -> dict[str, str]:
        out = self.slurm.run("scontrol", "show", "job", "--oneliner", job, check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job: str, until: object, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if until():  # type: ignore[operator]
                return
            if self.job(job).get("JobState") in ENDED:
                raise AssertionError(f"job {job} ended early: {self.job(job)}\n{self.output(job)}")
            time.sleep(1)
        raise AssertionError(f"job {job}: condition not met in {timeout_s} s\n{self.output(job)}")

    def wait_end(self, job: str, timeout_s: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.job(job)
            if state.get("JobState") in ENDED:
                return state
            time.sleep(1)
        raise AssertionError(f"job {job} did not end in {timeout_s} s: {self.job(job)}\n{self.output(job)}")

    def output(self, job: str) -> str:
        """The job's output, then the logs it keeps in $ARB_HOME/slurm/<job> (nodes, MLflow server)."""
        path = self.work / f"arb-{job}.out"
        logs = sorted((self.work / "shared" / "slurm" / job).glob("*.log"))
        return (path.read_text() if path.exists() else "") + "".join(
            f"\n--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in logs)  # fmt: skip

    def trial_runs(self) -> list:
        client = MlflowClient(self.store)
        exp = client.get_experiment_by_name("slurm-stub")
        runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
        return [r for r in runs if Tag.KEY in r.data.tags]

    def finished(self) -> set[str]:
        if not (self.work / "shared" / "mlflow.db").exists():
            return set()
        return {r.data.tags[Tag.KEY] for r in self.trial_runs()
                if r.data.tags.get(Tag.STATUS) == tracking.FINISHED}  # fmt: skip

    def calls(self, job: str) -> int:
        """LM calls the job's Ollamas have answered so far."""
        return sum(len(p.read_text().splitlines()) for p in (self.work / "ollama").glob(f"calls-{job}-*.tsv"))

    def cut_mid_trial(self, job: str) -> bool:
        """A trial has finished, and another is unfinished but has had answers: what a cut leaves for the cache."""
        runs = self.trial_runs()
        if not any(r.data.tags.get(Tag.STATUS) == tracking.FINISHED for r in runs):
            return False
        paid = sum(r.data.metrics.get("lm_calls", 0) - r.data.metrics.get("cache_hits", 0) for r in runs
                   if r.data.tags.get(Tag.STATUS) == tracking.FINISHED)  # fmt: skip
        return any(r.info.status == "RUNNING" for r in runs) and self.calls("*") >= paid + 2

    def leftovers(self, job: str) -> list[str]:
        """Processes of the user and temp dirs of the job, after a grace period for the last exits."""
        for _ in range(20):
            procs = subprocess.run(["pgrep", "-a", "-u", self.user], capture_output=True, text=True).stdout
            dirs = [str(p) for p in Path("/tmp").glob(f"arb-{job}-*")]
            if not procs.strip() and not dirs:
                return []
            time.sleep(1)
        return [*procs.splitlines(), *dirs]

    def check_ended_cleanly(self, job: str) -> None:
        assert not self.leftovers(job), (self.leftovers(job), self.output(job))
        runs = self.trial_runs()
        keys = [r.data.tags[Tag.KEY] for r in runs]
        assert len(keys) == len(set(keys)), keys  # one run per trial key, however the jobs ended
        assert not [r for r in runs if r.info.status == "RUNNING"], self.output(job)
        nodes = self.work / "shared" / "slurm" / job / "nodes.log"  # none if stopped before the nodes started
        log = nodes.read_text() if nodes.exists() else ""
        assert "Killed" not in log, log  # every node stopped through its trap, none was SIGKILLed


@pytest.fixture(scope="module")
def study() -> Iterator[Study]:
    if why := real_slurm.available():
        pytest.skip(why)
    user = real_slurm.ensure_user()
    base = Path(tempfile.mkdtemp(prefix="arb-slurm-test-"))
    base.chmod(0o755)
    work = base / "work"
    work.mkdir()
    shutil.chown(work, user.pw_uid, user.pw_gid)
    changed = real_slurm.grant_traverse([ROOT, Path(sys.executable).resolve()], user.pw_name)
    # This process reads the jobs' store as root: MLflow takes a lock file named after the store in the temp dir
    # (/tmp/db_init_lock-<hash>), which the jobs' servers, as the user, could not open had root created it. With
    # its own temp dir this process no longer shares that lock, so it reads the store only after a job's server
    # has created it (below).
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(base / "root-tmp")
    Path(tempfile.tempdir).mkdir()
    try:
        with real_slurm.RealSlurm(base / "slurm", nodes=2) as slurm:
            s = Study(slurm, work, user.pw_name)
            s.grid.write_text(GRID)
            shutil.chown(s.grid, user.pw_uid, user.pw_gid)
            yield s
    finally:
        tempfile.tempdir = saved_tempdir
        subprocess.run(["pkill", "-KILL", "-u", user.pw_name], check=False)
        real_slurm.revoke_traverse(changed, user.pw_name)
        shutil.rmtree(base, ignore_errors=True)


def test_a_request_the_partition_can_never_grant_is_refused_in_seconds(study: Study) -> None:
    proc = study.as_user("deploy/slurm/submit", "--time=02:00:00", str(study.grid))  # partition MaxTime is 30 min
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # Slurm says PartitionConfig at first, PartitionTimeLimit once the scheduler has looked at the job
    assert re.search(r"could never start on partition gpu \(Partition(Config|TimeLimit): it asked for 2 node\(s\) "
                     r"for 2:00:00; the partition allows .*MaxTime=00:30:00", proc.stderr), proc.stderr  # fmt: skip
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not study.slurm.run("squeue", "--noheader").stdout.strip()  # the job it submitted was cancelled


def test_five_endings_leave_nothing_behind_and_resume_from_the_cache(study: Study) -> None:
    # 1. the time limit's warning, `--signal=B:TERM`: SIGTERM to the batch shell only
    first = study.sbatch("--nodes=2", "--cpus-per-task=2", "--mem=2000", "--time=20", "deploy/slurm/arb.sbatch",
                         str(study.grid))  # fmt: skip
    # the store is read only once arb has reached the job's MLflow server: before that the server may still be
    # creating the tables, and a second process migrating the same SQLite file at once corrupts the migration
    # (this process's MLflow lock is not the server's: see the fixture)
    study.wait(first, lambda: "→ MLflow experiment" in study.output(first) and study.cut_mid_trial(first))
    study.slurm.run("scancel", "--batch", "--signal=TERM", first)
    state = study.wait_end(first)
    log = study.output(first)
    assert state["JobState"] == "FAILED" and state["ExitCode"] == "2:0", state  # arb's exit code: interrupted
    assert "the sweep stopped before every trial ended" in log and "exited with 2" in log, log
    # the line to go on repeats what the job was submitted with
    assert (f"submit: deploy/slurm/submit --nodes=2 --partition=gpu --cpus-per-task=2 --mem=2000M "
            f"--gpus-per-node=1 --time=20:00 {study.grid} resume") in log, log  # fmt: skip
    study.check_ended_cleanly(first)
    done = study.finished()
    assert 1 <= len(done) < 6

    # 2. plain `scancel`: SIGTERM to every process of the job at once (the MLflow server too), SIGKILL 30 s later
    out = f"--output={study.work}/arb-%j.out"
    second = study.as_user("deploy/slurm/submit", "--nodes=2", "--cpus-per-task=2", "--time=20", out,
                           str(study.grid), "resume")  # fmt: skip
    assert second.returncode == 0, (second.stdout, second.stderr, study.slurm.logs())
    second_id = re.search(r"Submitted batch job (\d+)", second.stdout).group(1)  # type: ignore[union-attr]
    study.wait(second_id, lambda: "trials already finished in MLflow" in study.output(second_id))
    study.wait(second_id, lambda: study.cut_mid_trial(second_id))
    study.slurm.run("scancel", second_id)
    state = study.wait_end(second_id)
    log = study.output(second_id)
    assert state["JobState"] == "CANCELLED", state
    # the batch shell finished its work within KillWait: the cut trials were marked, the resume line printed
    assert f"submit: deploy/slurm/submit --nodes=2 --cpus-per-task=2 --time=20 {out} {study.grid} resume" in log, log
    study.check_ended_cleanly(second_id)
    interrupted = [r for r in study.trial_runs() if r.data.tags.get("arb.error_class") == "Interrupted"]
    assert interrupted and "trial(s) were cut mid-run and are marked interrupted" in log, log

    # 3. a real time limit: the warning comes up to a minute early (Slurm's event resolution), maybe before arb
    third = study.sbatch("--nodes=2", "--cpus-per-task=2", "--time=1", "--signal=B:TERM@30",
                         "deploy/slurm/arb.sbatch", str(study.grid), "resume")  # fmt: skip
    state = study.wait_end(third, timeout_s=240)
    assert state["JobState"] in {"FAILED", "TIMEOUT", "CANCELLED"}, state
    study.check_ended_cleanly(third)

    # 4. `scontrol requeue`: the job keeps its id, so its second attempt must not use the first one's files
    fourth = study.sbatch("--nodes=2", "--cpus-per-task=2", "--time=20", "deploy/slurm/arb.sbatch", str(study.grid),
                          "resume")  # fmt: skip
    head = study.work / "shared" / "slurm" / fourth / "head-address"
    study.wait(fourth, head.exists)
    study.slurm.run("scontrol", "requeue", fourth)
    deadline = time.monotonic() + 60  # Slurm holds a requeued job for 2 minutes; release it now
    while study.job(fourth).get("Reason") != "BeginTime" and time.monotonic() < deadline:
        time.sleep(0.5)
    study.slurm.run("scontrol", "update", f"JobId={fourth}", "StartTime=now")
    state = study.wait_end(fourth, timeout_s=400)
    log = study.output(fourth)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", (state, log)
    assert "(attempt 2)" in log and "2 node(s) joined" in log, log
    study.check_ended_cleanly(fourth)

    runs = study.trial_runs()
    assert len(runs) == 6 and all(r.data.tags[Tag.STATUS] == "finished" for r in runs)
    # the cut trials' calls were paid once: the jobs that finished them found the answers in the LM cache
    assert sum(r.data.metrics.get("cache_hits", 0) for r in runs) > 0
    reports = [json.loads(p.read_text()) for p in (study.work / "ollama").glob("ollama-*.json")]
    assert len({r["port"] for r in reports}) == len(reports) >= 6  # every job's Ollamas on ports of their own
    assert all(r["env"]["OLLAMA_HOST"].startswith("127.0.0.1:") for r in reports)
    assert all(r["env"]["OLLAMA_CONTEXT_LENGTH"] == "8192" for r in reports)
    token = study.work / "shared" / "slurm" / "secrets" / "ray_auth_token"
    assert token.stat().st_mode & 0o077 == 0 and len(token.read_text()) == 64

    # the study outlives the jobs: report from the shared filesystem, no server
    env = {**os.environ, "ARB_HOME": str(study.work / "shared")}
    report = subprocess.run([sys.executable, "-m", "grid.cli", "report", "slurm-stub", "--tracking-uri",
                             study.store, "--out", str(study.work / "report")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=env)  # fmt: skip
    assert report.returncode == 0, report.stderr


def test_a_vllm_job_serves_its_model_on_every_node(study: Study) -> None:
    """ARB_ENGINE=vllm: each node starts `vllm serve` (the tests' look-alike, tests/slurm/bin/vllm) instead of
    Ollama, labels itself with the served name and port, and the grid's vLLM model runs there (its registry
    endpoint is a closed port: only the node's own server can answer); the job ends with nothing left behind."""
    models = study.work / "vllm-models.yaml"
    models.write_text("models:\n  llama-vllm: {provider: vllm, id: served-llama, endpoint: 'http://127.0.0.1:9/v1', "
                      "context: 2048, max_tokens: 256}\n")  # fmt: skip
    grid = study.work / "vllm-grid.yaml"
    grid.write_text(GRID.replace("slurm-stub", "slurm-vllm").replace("[llama3.2, mistral]", "[llama-vllm]"))
    for path in (models, grid):
        shutil.chown(path, study.user, study.user)
    job = study.sbatch("--nodes=2", "--cpus-per-task=2", "--mem=2000", "--time=20", "deploy/slurm/arb.sbatch",
                       str(grid), "--models", str(models), ARB_ENGINE="vllm",
                       ARB_VLLM_MODEL="/models/llama-3.1-8b-instruct", ARB_VLLM_NAME="served-llama")  # fmt: skip
    state = study.wait_end(job, timeout_s=600)
    log = study.output(job)
    assert state["JobState"] == "COMPLETED", (state, log)
    assert log.count("vllm on 127.0.0.1:") == 2 and "ollama on" not in log, log
    client = MlflowClient(study.store)
    exp = client.get_experiment_by_name("slurm-vllm")
    runs = [r for r in client.search_runs([exp.experiment_id]) if Tag.KEY in r.data.tags]
    assert len(runs) == 3 and all(r.data.tags[Tag.STATUS] == tracking.FINISHED for r in runs), log
    assert all(r.data.metrics["lm_calls"] >= 4 for r in runs)
    assert not study.leftovers(job), study.leftovers(job)
