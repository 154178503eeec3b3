"""A sweep's progress on the console and how it ended: one line per trial as it ends, and the rule that stops a
sweep whose trials keep failing with the same error."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from trainables.record.schema import Tag
from trainables.vocabulary import Trial


@dataclass
class GridOutcome:
    """How a launch ended, trial by trial (by trial key)."""

    total: int
    statuses: dict[str, str] = field(default_factory=dict)
    reused: int = 0
    interrupted: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    """Why each errored trial failed (one line), by trial key."""
    repeated_error: str | None = None
    """Set when most ended trials failed with the same error: the sweep stops rather than spend the rest on it."""

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "errored"]

    def note_error(self, key: str, line: str) -> bool:
        """Record a failed trial; True the first time the sweep should stop because the same error (up to names
        and numbers, `error_signature`) ended at least `REPEATS_TO_STOP` trials and most of those that ended."""
        self.errors[key] = line
        if self.repeated_error is not None:
            return False
        counts: dict[str, int] = {}
        for error in self.errors.values():
            counts[error_signature(error)] = counts.get(error_signature(error), 0) + 1
        n = max(counts.values())
        if n >= REPEATS_TO_STOP and 2 * n > len(self.statuses):
            self.repeated_error = line
            return True
        return False


REPEATS_TO_STOP = 3
"""Failures with one error after which a sweep that mostly fails stops (the first trials of a sweep say it all)."""


def error_signature(line: str) -> str:
    """An error line with what varies between trials (quoted names, paths, numbers, run ids) taken out, so that
    "cannot load 'google/boolq'" and "cannot load 'openai/gsm8k'" count as the same failure."""
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line.split(" (MLflow run")[0])
    return re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?|/[\w./-]+", "#", line)


def progress_callback(trials: list[Trial], outcome: GridOutcome, stream: Any) -> Any:
    from ray.tune import Callback

    names = {t.key: t.run_name for t in trials}
    grid = trials[0].grid if trials else "GRID"

    class Progress(Callback):
        """One line per trial as it ends: status, baseline → optimized, time."""

        def __init__(self) -> None:
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.started[trial.trial_id] = time.monotonic()
            key = Trial.model_validate(trial.config["trial"]).key
            print(f"  ▶ start    {names.get(key, key)}", file=stream, flush=True)

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
            key = Trial.model_validate(trial.config["trial"]).key
            outcome.statuses[key] = "compile_failed" if result.get("compile_failed") else "finished"
            outcome.reused += int(result.get("reused", 0))
            done = len(outcome.statuses)
            took = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
            how = "compile_failed (baseline kept)" if result.get("compile_failed") else "finished"
            how = f"reused {how}" if result.get("reused") else how
            print(
                f"  ✔ [{done}/{outcome.total}] {how} {names.get(key, key)}: "
                f"baseline {result.get('baseline_score', float('nan')):.1f} → optimized "
                f"{result.get('optimized_score', float('nan')):.1f} ({result.get('delta_pp', 0):+.1f} pp), "
                f"{int(result.get('lm_calls', 0))} LM calls ({result.get('eval_in_flight', 1):.1f} in flight), "
                f"{took:.0f} s",
                file=stream,
                flush=True,
            )

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            key = Trial.model_validate(trial.config["trial"]).key
            outcome.statuses[key] = "errored"
            line = _error_line(trial)
            print(
                f"  ✘ [{len(outcome.statuses)}/{outcome.total}] errored  {names.get(key, key)}: {line}",
                file=stream,
                flush=True,
            )
            if outcome.note_error(key, line):
                same = sum(error_signature(e) == error_signature(line) for e in outcome.errors.values())
                print(
                    f"  ■ stopping the sweep: {same} of the {len(outcome.statuses)} trials that ended failed with "
                    f"the same error; the other trials would too. Fix it, then `arb resume {grid}`.",
                    file=stream,
                    flush=True,
                )

    return Progress()


def _error_line(trial: Any) -> str:
    """Why a Tune trial failed, in one line: the trainable's own summary (class, message, MLflow run) when it
    raised one, else the class and first line of whatever Ray reports (e.g. the worker process died). Ray may not
    have written its error file yet when it tells the callbacks, so the trial's MLflow run (which the trial tagged
    with its error before raising) is asked next."""
    from trainables.trial import TrialFailed

    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # an unreadable error file must not stop the sweep
        error = None
    if isinstance(error, str) and error.strip():  # Tune's text trace: its last line names the exception
        return error.strip().splitlines()[-1][:300]
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, TrialFailed):
        return str(cause)
    if cause is not None and not isinstance(cause, str):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return f"{type(cause).__name__}: {first[:300]}"
    return _recorded_error(trial.config) or "the trial process ended without an error message (see `arb status`)"


def _recorded_error(config: dict[str, Any]) -> str | None:
    """The error a trial recorded in its MLflow run (`arb.error_class`, `arb.error`), if it got that far."""
    from mlflow.tracking import MlflowClient

    from trainables.record import tracking

    try:
        runtime, key = config["runtime"], Trial.model_validate(config["trial"]).key
        runs = tracking.find_runs(MlflowClient(runtime["tracking_uri"]), runtime["experiment_id"], key)
    except Exception:  # the store is unreachable, or the config is not a trial's: nothing more to say
        return None
    for run in runs:
        message = run.data.tags.get(Tag.ERROR)
        if message:
            return f"{run.data.tags.get('arb.error_class', 'Error')}: {' '.join(message.split())[:300]}"
    return None
