"""Publishing a trial's record: tables logged at once by the trial's background writes all reach the run."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial

import dspy
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from trainables.record import publish


def test_two_tables_of_one_run_logged_at_once_are_both_listed(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`log_table` reads the run's table list and writes it back: unguarded, two at once lost one of the two or
    failed on the store's unique (tag, run) constraint (seen in 2 of 6 runs of tests/trainables/test_optimizers.py)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("tables")
    examples = [dspy.Example(id="q1", question="1+1?", answer="2").with_inputs("question")]
    rows = [{"example_id": "q1", "prediction": "2", "score": 1.0}]
    for _ in range(6):  # the race is narrow: a few runs, each with both writers started together at a barrier
        run_id = client.create_run(experiment).info.run_id
        writes: list[Callable[[], None]] = [
            partial(publish.log_examples_table, run_id, rows, examples, ("answer",)),
            partial(publish.log_candidates, run_id, [{"candidate": 0, "train_score": 1.0}]),
        ]
        errors = _together(writes)
        assert not errors, errors
        listed = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
        assert sorted(entry["path"] for entry in listed) == ["candidates.json", "examples.json"]


def _together(writes: list[Callable[[], None]]) -> list[BaseException]:
    """Runs the writes on threads released at once; the errors they raised."""
    barrier = threading.Barrier(len(writes))
    errors: list[BaseException] = []

    def write(log: Callable[[], None]) -> None:
        barrier.wait(timeout=30)
        try:
            log()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log,)) for log in writes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors
