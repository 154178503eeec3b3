"""Which of a grid's trials are already done in its MLflow experiment: same key, same work.

A trial key covers the grid point and the settings the work depends on (`Trial.key`). Runs recorded before the key
covered the settings carry the point alone as their key; such a run is the trial's result when its recorded
settings are the trial's, and is then adopted (its key tag rewritten, 0 LM calls). A done run at the same point
with other settings is never taken for the trial, nor run beside it in the same experiment (a report would show
both as one point): the grid is refused, in one line that says what differs and how to go on.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from trainables.errors import ArbError
from trainables.optimizers import get_optimizer
from trainables.record import tracking
from trainables.record.schema import Tag
from trainables.vocabulary import Trial


def recorded_settings(run: Run, optimizer: str) -> dict[str, Any]:
    """A run's settings as `Trial.settings` states them, read from its params (optimizer settings with the
    optimizer's defaults filled, as runs recorded before defaults were filled in did not)."""
    params = run.data.params
    raw = params.get("optimizer_params", "{}")
    try:
        given = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        given = raw
    settings = get_optimizer(optimizer).settings(given) if isinstance(given, dict) else given
    return {"n_eval": _int(params.get("n_eval")), "n_val": _int(params.get("n_val")), "data": params.get("data"),
            "optimizer_params": settings}  # fmt: skip


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def differences(trial: Trial, run: Run) -> list[str]:
    """`name recorded → grid` for each setting in which a run differs from the trial."""
    have, want = recorded_settings(run, trial.optimizer), trial.settings()
    return [f"{k} {have[k]!r} → {want[k]!r}" for k in want if have[k] != want[k]]


def settle(tracking_uri: str, name: str, trials: Sequence[Trial]) -> dict[str, str]:
    """Trial key → status of the trials of grid `name` that are done: under their key, or under their grid point
    from before keys covered the settings, with the same settings (adopted). Raises `ArbError` for a done run at
    a trial's point whose settings differ."""
    runs = tracking.done_runs(tracking_uri, name)
    by_key = {r.data.tags[Tag.KEY]: r for r in runs}
    by_point: dict[str, list[Run]] = {}
    for run in runs:
        by_point.setdefault(run.data.tags.get(Tag.POINT) or run.data.tags[Tag.KEY], []).append(run)
    done: dict[str, str] = {}
    client = MlflowClient(tracking_uri)
    for trial in trials:
        if trial.key in by_key:
            done[trial.key] = by_key[trial.key].data.tags[Tag.STATUS]
            continue
        for run in by_point.get(trial.point_key, []):
            changed = differences(trial, run)
            if changed:
                raise ArbError(
                    f"grid {name!r} already holds {trial.run_name} (run {run.info.run_id[:12]}) with other "
                    f"settings: {'; '.join(changed)}",
                    "give the grid a new `name` to run these settings beside the old ones, or put the old "
                    "settings back to reuse the run",
                )
            if run.data.tags[Tag.KEY] == trial.point_key:
                _adopt(client, run, trial)
                done[trial.key] = run.data.tags[Tag.STATUS]
    return done


def _adopt(client: MlflowClient, run: Run, trial: Trial) -> None:
    """A run recorded under the trial's point, with the trial's settings, becomes the trial's run."""
    client.set_tag(run.info.run_id, Tag.POINT, trial.point_key)
    client.set_tag(run.info.run_id, Tag.KEY, trial.key)
