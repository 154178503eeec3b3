"""Results that cannot be written: a read-only or full results directory is a clear error before any work, and a
write that fails mid-trial (disk full) never leaves a run that counts as finished."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from grid.spec import GridSpec, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

ROOT = Path(__file__).resolve().parents[2]
needs_mount = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare to mount a private tmpfs"
)


def _arb_in_private_mount(mount_options: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`arb run smoke` with ARB_HOME on a tmpfs mounted with `mount_options`, visible only to this command."""
    target = tmp_path / "mnt"
    target.mkdir()
    script = (
        f"mount -t tmpfs -o {mount_options} tmpfs {target} && "
        f"ARB_HOME={target}/home {sys.executable} -m grid.cli run smoke"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)  # fmt: skip


@needs_mount
@pytest.mark.parametrize(
    ("options", "needle"), [("ro", "is not writable: Read-only file system"), ("size=1m", "has only 1 MB free")]
)
def test_unwritable_or_full_results_directory_is_a_clear_error(options: str, needle: str, tmp_path: Path) -> None:
    proc = _arb_in_private_mount(options, tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("arb: error: results directory") and needle in line and "ARB_HOME" in line


def test_disk_full_while_logging_never_counts_as_finished(
    stub: StubServer, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = GridSpec(name="diskfull", models=["llama3.2"], tasks=["math"], optimizer="none", demos=[0],
                    n_labeled=[0], n_val=1, n_eval=4, data="sample")  # fmt: skip
    [trial] = expand(spec, load_registry())
    exp = tracking.ensure_experiment(tracking_uri, trial.grid)
    config: dict[str, Any] = {
        "trial": trial.model_dump(),
        "runtime": {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {"llama3.2": stub.url}},
    }

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "log_artifacts", full)
        with pytest.raises(OSError, match="No space left"):
            execute_trial(config)
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, exp, trial.key)
    assert run.data.tags["arb.status"] == "errored" and run.data.tags["arb.error_class"] == "OSError"
    assert tracking.finished_run(client, exp, trial.key) is None

    metrics = execute_trial(config)  # space is back: the retry redoes the trial in the same run
    assert metrics["reused"] == 0.0
    [again] = tracking.find_runs(client, exp, trial.key)
    assert again.info.run_id == run.info.run_id and again.data.tags["arb.status"] == "finished"
    # the retry's artifacts, and the failed attempt's traceback (kept with the run, redacted)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "program.json",
        "instruction.txt",
        "examples.csv",
        "examples.json",  # the per-example MLflow table, logged before the failing write
        "error.txt",
    }
    trace = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "Traceback" in trace and "OSError" in trace and "No space left" in trace
