"""Get-or-create under contention: many processes racing for one trial key end with exactly one run."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from mlflow.tracking import MlflowClient

from trainables.record import tracking


def _racer(uri: str, experiment_id: str, barrier: object, queue: object) -> None:
    client = MlflowClient(uri)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        run_id, _ = tracking.get_or_create_run(client, experiment_id, "samekey", "racer", {"arb.grid": "race"})
        queue.put(("ok", run_id))  # type: ignore[attr-defined]
    except Exception as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


def test_eight_processes_get_or_create_one_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(uri, "race")
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(uri, experiment_id, barrier, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [r for r in results if r[0] == "error"] == []
    survivors = tracking.find_runs(MlflowClient(uri), experiment_id, "samekey")
    assert len(survivors) == 1
    assert {r[1] for r in results} == {survivors[0].info.run_id}
