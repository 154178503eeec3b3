"""What a trial's MLflow run shows besides its metrics: traces of its LM calls and the optimizer's candidates.

While a trial works, its run is MLflow's active run in the worker process and `mlflow.dspy.autolog` is on:

- traces: one per evaluated test example and condition (root span `baseline` / `optimized` / `k2` …, tagged with
  `arb.example_id`, `arb.condition` and `arb.score`), holding DSPy's module, adapter and LM spans with token usage
  and latency; linked to the run, so the run's Traces tab lists them. Which examples are traced is decided by
  example id (`trace_sample`), so baseline and optimized traces pair up. Optimizer calls are traced only with
  `traces: all` (mlflow.dspy's `log_traces_from_compile`).
- candidates: each evaluation the optimizer makes (MIPROv2 trials, random-search candidates) becomes a child run
  `eval_N` with the candidate's instructions and demos (`model.json`) and its score (`eval`), and the trial's run
  gets the metric history `eval` (mlflow.dspy's `log_compiles` / `log_evals`).

API keys stay out: mlflow.dspy drops `api_key` from the LM attributes it records (`sanitize_params`), and
`tests/test_secrets.py` checks the traces with a planted key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol, TypeVar

import mlflow
import mlflow.dspy
from mlflow.entities import SpanType

from trainables.vocabulary import TraceMode


class Scored(Protocol):
    pred: Any
    score: float


T = TypeVar("T", bound=Scored)


@contextmanager
def recording(
    tracking_uri: str, experiment_id: str, run_id: str, traces: TraceMode,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> Iterator[None]:  # fmt: skip
    """Make `run_id` the active run of this process, with DSPy autologging set for `traces`. The wait for the
    trace export at the end is handed to `defer` (to overlap with the trial's other writes), else done here."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)  # traces go to the active experiment, not the run's
    _autolog(
        log_traces=traces != "none",
        log_traces_from_compile=traces == "all",
        log_traces_from_eval=traces != "none",
        log_compiles=True,
        log_evals=True,
    )
    while mlflow.active_run() is not None:  # left over by a trial that this worker process ran before
        mlflow.end_run()
    # An active model (set by loading or logging one earlier in this process) would link this trial's metrics and
    # traces to that model, possibly in another store.
    mlflow.clear_active_model()
    try:
        with mlflow.start_run(run_id=run_id):
            yield
    finally:
        # Traces are exported in the background; they must be in the store before the run counts as done.
        flush = partial(mlflow.flush_trace_async_logging, terminate=False)
        if defer is None:
            flush()
        else:
            defer(flush)
        mlflow.clear_active_model()


def _autolog(**wanted: bool) -> None:
    """`mlflow.dspy.autolog(**wanted)`, unless it is already set so. It calls `dspy.configure`, which DSPy allows
    only from the thread that called it first, and Ray Tune runs each trial of a reused worker process in a new
    thread: the trials of a sweep share their settings, so only the first one configures."""
    import dspy
    from mlflow.dspy.callback import MlflowCallback
    from mlflow.dspy.constant import FLAVOR_NAME
    from mlflow.utils.autologging_utils import autologging_is_disabled, get_autologging_config

    current = not autologging_is_disabled(FLAVOR_NAME) and all(
        get_autologging_config(FLAVOR_NAME, key, None) == value for key, value in wanted.items()
    )
    if current and any(isinstance(c, MlflowCallback) for c in dspy.settings.callbacks):
        return
    mlflow.dspy.autolog(**wanted, silent=True)


def chosen(example_id: str, sample: float) -> bool:
    """Whether an example's evaluation is traced: a fixed fraction of example ids, the same in every condition."""
    if sample >= 1.0:
        return True
    digest = hashlib.sha256(example_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < sample


def traced_example(
    work: Callable[[], T], *, example_id: str, condition: str, on: bool, inputs: dict[str, Any] | None = None
) -> T:
    """Run `work` (one example: the program call and its score) as one trace, or untraced when `on` is false."""
    if not on:
        return _untraced(work)

    @mlflow.trace(name=condition, span_type=SpanType.CHAIN)
    def example() -> T:
        done = work()
        mlflow.update_current_trace(
            tags={"arb.example_id": example_id, "arb.condition": condition, "arb.score": f"{done.score:g}"}
        )
        span = mlflow.get_current_active_span()
        if span is not None:
            span.set_inputs({k: _text(v) for k, v in (inputs or {}).items()})
            span.set_outputs({"prediction": _text(done.pred), "score": done.score})
        return done

    return example()


def _untraced(work: Callable[[], T]) -> T:
    # DSPy's callback opens a trace of its own for any program call while tracing is on; MLflow's own switch for
    # "not this call" is what mlflow.dspy uses around compile and evaluate.
    from mlflow.tracing.provider import trace_disabled

    return trace_disabled(work)()


def _text(pred: Any) -> str:
    return str(pred)[:2000]
