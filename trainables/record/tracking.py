"""The one module that talks to MLflow: one experiment per grid, one run per trial key, ever.

Runs are found by the tag `arb.trial_key`, so a retried or resumed trial reuses its run instead of adding one
(Ray's `MLflowLoggerCallback` forgets its trial->run map on restore, which is why it is not used).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.entities import RunStatus as MlflowRunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.errors import ArbError
from trainables.record.schema import Tag

"""The trial's grid point (`Trial.point_key`): what a trial key was before it covered the work's settings."""
FINISHED, COMPILE_FAILED, ERRORED, RUNNING = "finished", "compile_failed", "errored", "running"
DONE_STATUSES = (FINISHED, COMPILE_FAILED)
"""A run in one of these states holds a complete result: re-running its trial key does no work."""

_PACKAGES = ("dspy", "ray", "mlflow", "litellm", "openai", "ollama", "datasets")  # llama-server: in its served identity
_PARAM_MAX = 6000  # MLflow's limit on a param value
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


def default_home() -> Path:
    """Where the embedded store lives: `$ARB_HOME`, else `./arb-results`."""
    return Path(os.environ.get("ARB_HOME", "arb-results")).resolve()


MIN_FREE_MB = 200
"""Free space a sweep needs in its results directory before it starts (MLflow store, artifacts, Ray results)."""


def check_writable(directory: Path, min_free_mb: int = MIN_FREE_MB) -> None:
    """Fail early, with the fix, if results cannot be written to `directory` (read-only, no permission, full)."""
    fix = "set ARB_HOME (or --tracking-uri) to a writable directory with free space"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".arb-write-probe-{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ArbError(f"results directory {directory} is not writable: {exc.strerror or exc}", fix) from None
    free_mb = shutil.disk_usage(directory).free // (1024 * 1024)
    if free_mb < min_free_mb:
        raise ArbError(f"results directory {directory} has only {free_mb} MB free (a sweep needs {min_free_mb})", fix)


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite file in `default_home()` (no server to install)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{default_home() / 'mlflow.db'}"


def redact(text: str) -> str:
    """`text` with the value of every secret-looking environment variable replaced by `***`."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_ENV.search(name):
            text = text.replace(value, "***")
    return text


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in _PACKAGES:
        try:
            out[f"version.{pkg}"] = version(pkg.replace("_", "-"))
        except PackageNotFoundError:
            out[f"version.{pkg}"] = "absent"
    return out


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The experiment for grid `name`, created once by the driver before trials start."""
    client = MlflowClient(tracking_uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        artifact_location = None
        if tracking_uri.startswith("sqlite:///"):
            # SQLite stores put artifacts under the cwd by default; keep them next to the database instead.
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            artifact_location = (db.parent / "artifacts").as_uri()
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except ArbError:
        raise
    except Exception as exc:
        raise store_error(tracking_uri, exc) from None


def store_error(tracking_uri: str, exc: Exception) -> ArbError:
    """The one-line error for a store that cannot be used: unreachable, or refusing these credentials."""
    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
    if status in (401, 403):
        who = os.environ.get("MLFLOW_TRACKING_USERNAME")
        problem = (
            f"the MLflow tracking server {tracking_uri} rejected "
            + (f"the credentials of user {who!r}" if who else "a request without credentials")
            + (" (401 Unauthorized)" if status == 401 else " (403 Forbidden: no permission on this experiment)")
        )
        fix = (
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server (on the cluster "
            "head: `source ~/.arb/cluster/tracking.env`)"
        )
        return ArbError(problem, fix)
    return ArbError(
        f"cannot reach the MLflow store {tracking_uri}: {type(exc).__name__}: {redact(str(exc))[:200]}",
        "check --tracking-uri / MLFLOW_TRACKING_URI, or start the tracking server",
    )


def find_runs(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    """All runs of a trial key, oldest first (normally zero or one)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{Tag.KEY}` = '{key}'",
        max_results=100,
        order_by=["start_time ASC"],
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def finished_run(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The run holding a complete result for `key`, if there is one."""
    for run in find_runs(client, experiment_id, key):
        if run.data.tags.get(Tag.STATUS) in DONE_STATUSES:
            return run
    return None


def finished_at_point(client: MlflowClient, experiment_id: str, point: str) -> Run | None:
    """The oldest done run of grid point `point` (`Trial.point_key`), whatever its settings: one recorded with the
    point as its tag, or, recorded before points existed, as its trial key."""
    for where in (f"tags.`{Tag.POINT}` = '{point}'", f"tags.`{Tag.KEY}` = '{point}'"):
        runs = client.search_runs([experiment_id], filter_string=where, max_results=100, order_by=["start_time ASC"])
        done = [r for r in runs if r.data.tags.get(Tag.STATUS) in DONE_STATUSES]
        if done:
            return done[0]
    return None


def done_runs(tracking_uri: str, name: str) -> list[Run]:
    """Every done trial run (finished / compile_failed) of grid `name` (none if it is new)."""
    client = MlflowClient(tracking_uri)
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:
        raise store_error(tracking_uri, exc) from None
    if exp is None:
        return []
    runs: list[Run] = []
    for status in DONE_STATUSES:  # one query per status: tracking servers reject IN on tags
        runs += [r for r in search_all(client, exp.experiment_id, f"tags.`{Tag.STATUS}` = '{status}'")
                 if r.data.tags.get(Tag.KEY)]  # fmt: skip
    return runs


def search_all(client: MlflowClient, experiment_id: str, where: str = "", page_size: int = 1000) -> list[Run]:
    """Every run of an experiment matching `where`, page after page (a grid can hold more runs than one page)."""
    out: list[Run] = []
    token = None
    while True:  # bounded by the store: the last page has no token
        page = client.search_runs([experiment_id], filter_string=where, max_results=page_size, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def finished_statuses(tracking_uri: str, name: str) -> dict[str, str]:
    """Trial key -> status (finished / compile_failed) of every done trial run of grid `name` (none if new)."""
    return {r.data.tags[Tag.KEY]: r.data.tags[Tag.STATUS] for r in done_runs(tracking_uri, name)}


def open_run(
    client: MlflowClient, experiment_id: str, key: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> tuple[str, Run | None]:
    """Start an attempt at trial `key`: (run id, None), or (run id, the run) if a run already holds its result.

    One lookup serves both questions (done? which run?); a reused run is marked running and gets any params it
    lacks in one batch; a new run is created running (see `get_or_create_run`) and gets its params in one batch.
    """
    runs = find_runs(client, experiment_id, key)
    for run in runs:
        if run.data.tags.get(Tag.STATUS) in DONE_STATUSES:
            return run.info.run_id, run
    if runs:
        run_id, existing = runs[0].info.run_id, runs[0].data.params
        _log_params(client, run_id, params, existing, tags={Tag.STATUS: RUNNING})
        client.update_run(run_id, status="RUNNING")
        return run_id, None
    run_id, created = get_or_create_run(client, experiment_id, key, run_name, tags, looked=True)
    if created:
        _log_params(client, run_id, params, {})
    else:  # another process created it first: it may have logged params already, and may have finished since
        return open_run(client, experiment_id, key, run_name, tags, params)
    return run_id, None


def get_or_create_run(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    run_name: str,
    tags: dict[str, str],
    settle_s: float = 0.25,
    rounds: int = 2,
    *,
    looked: bool = False,
) -> tuple[str, bool]:
    """(run id, whether this call created it) for trial `key`, creating the run only if none exists; safe when many
    processes race. `looked`: the caller has just found no run for `key` (one search fewer).

    On a SQLite store (one machine) a file lock next to the database serializes look-then-create. On a tracking
    server, MLflow cannot create a run conditionally, so racers all create one and then agree on the oldest
    (start time, then run id); a racer whose run is not the oldest deletes it. Everyone looks again `rounds`
    times, `settle_s` apart, because a racer's run can become visible after ours while carrying an earlier
    timestamp; a run that appears later than that was created after ours, so it loses.
    """
    uri = str(client.tracking_uri)
    new_tags = {Tag.KEY: key, Tag.STATUS: RUNNING, **tags}
    if uri.startswith("sqlite:///"):
        # One machine, one file: a lock makes look-then-create atomic. (SQLite also serializes the racers' writes,
        # so a run can become visible long after its start time, which the protocol below cannot see.)
        with FileLock(uri.removeprefix("sqlite:///") + ".arb-runs.lock", timeout=120):
            runs = find_runs(client, experiment_id, key)
            if runs:
                return runs[0].info.run_id, False
            return str(client.create_run(experiment_id, run_name=run_name, tags=new_tags).info.run_id), True
    runs = [] if looked else find_runs(client, experiment_id, key)
    if runs:
        return runs[0].info.run_id, False
    my_id = client.create_run(experiment_id, run_name=run_name, tags=new_tags).info.run_id
    deleted = False
    oldest = my_id
    # Losers keep watching too: the run they yielded to may itself yield to an even older one seen later.
    for round_ in range(rounds + 1):
        runs = find_runs(client, experiment_id, key)
        oldest = runs[0].info.run_id if runs else my_id
        if oldest != my_id and not deleted:
            client.delete_run(my_id)
            deleted = True
        if round_ < rounds:
            time.sleep(settle_s)
    return oldest, oldest == my_id


def _log_params(
    client: MlflowClient, run_id: str, params: dict[str, Any], existing: dict[str, str],
    tags: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """Params (with package versions) not in `existing`, and `tags`, in one batch: MLflow refuses to change a
    param, and a retry logs the same ones."""
    batch = []
    for k, v in {**params, **package_versions()}.items():
        value = redact(v if isinstance(v, str) else json.dumps(v, sort_keys=True))[:_PARAM_MAX]
        if k not in existing:
            batch.append(Param(k, value))
    run_tags = [RunTag(k, v) for k, v in (tags or {}).items()]
    if batch or run_tags:
        client.log_batch(run_id, params=batch, tags=run_tags)


def upload_artifacts(client: MlflowClient, run_id: str, artifacts: dict[str, str]) -> None:
    """The trial's text artifacts (file name → content), secrets redacted."""
    with tempfile.TemporaryDirectory(prefix="arb-artifacts-") as tmp:
        for name, content in artifacts.items():
            (Path(tmp) / name).write_text(redact(content))
        client.log_artifacts(run_id, tmp)


def commit(client: MlflowClient, run_id: str, *, status: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
    """Write the trial's result once everything else is logged: metrics, tags and the status tag in one batch (the
    commit point: a run counts as done only once all of it is logged), then the run's end. A process killed before
    the batch leaves a run that a retry redoes; one killed after it, a done run still RUNNING, which the next look
    at it closes (`trainables.trial.execute_trial`)."""
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, redact(str(v))[:5000]) for k, v in {**tags, Tag.STATUS: status}.items()],
    )
    client.set_terminated(run_id, status=MlflowRunStatus.to_string(MlflowRunStatus.FINISHED))


def mark_errored(client: MlflowClient, run_id: str, exc: BaseException) -> None:
    """Record why a trial failed; the run stays reusable so that a retry finishes it."""
    client.set_tag(run_id, Tag.STATUS, ERRORED)
    client.set_tag(run_id, Tag.ERROR_CLASS, type(exc).__name__)
    client.set_tag(run_id, Tag.ERROR, redact(str(exc))[:2000])
    trace = redact("".join(traceback.format_exception(exc)))
    with contextlib.suppress(Exception):  # the tags above already say what failed; the trace is a bonus
        client.log_text(run_id, trace, "error.txt")
    client.set_terminated(run_id, status="FAILED")


INTERRUPTED = "the sweep was stopped (a cancelled or timed-out job) while this trial ran; `arb resume` runs it again"


def mark_interrupted(tracking_uri: str, name: str) -> list[str]:
    """End the trial runs of grid `name` still RUNNING, with their evaluation runs, as errored: what a trial says
    of itself when it is stopped, written for trials that were killed before they could (every process of a SLURM
    job is signalled at once, the tracking server too). Call once the sweep's driver has stopped; a trial still
    alive that finishes afterwards overwrites the mark with its result. Returns the trial keys marked."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    running = search_all(client, exp.experiment_id, "attributes.status = 'RUNNING'")
    # a run whose status tag says done was closed by a process killed between its two last writes: it stays done
    trials = {r.info.run_id: r.data.tags[Tag.KEY] for r in running
              if Tag.KEY in r.data.tags and r.data.tags.get(Tag.STATUS) not in DONE_STATUSES}  # fmt: skip
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId")
        if run.info.run_id in trials:
            client.set_tag(run.info.run_id, Tag.STATUS, ERRORED)
            client.set_tag(run.info.run_id, Tag.ERROR_CLASS, "Interrupted")
            client.set_tag(run.info.run_id, Tag.ERROR, INTERRUPTED)
            client.set_terminated(run.info.run_id, status="KILLED")
        elif parent in trials:
            client.set_terminated(run.info.run_id, status="KILLED")
    return sorted(trials.values())
