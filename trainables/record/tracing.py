"""What a trial's MLflow run shows besides its metrics: traces of its LM calls and the optimizer's candidates.

While a trial works, its run is MLflow's active run in the worker process and `mlflow.dspy.autolog` is on:

- traces: one per evaluated test example and condition (root span `baseline` / `optimized` / `k2` …, tagged with
  `arb.example_id`, `arb.condition` and `arb.score`), holding DSPy's module, adapter and LM spans with token usage
  and latency. The root span's inputs are the example's input fields and its outputs the program's output fields,
  as JSON; the trace carries the gold answer as expectations and the score as feedback named after the task's
  metric (`accuracy`, `exact_match` …), with the task's feedback sentence or the parse failure as its rationale.
  Which examples are traced is decided by example id (`trace_sample`), so baseline and optimized traces pair up.
  Optimizer calls are traced only with `traces: all` (mlflow.dspy's `log_traces_from_compile`).
- evaluation runs: each condition's traces belong to a run of its own (`EvaluationRuns`), which MLflow's
  Evaluation runs page lists and compares example by example; every trace is also linked to the trial's run, so
  its Traces tab lists both conditions.
- candidates: each evaluation the optimizer makes (MIPROv2 trials, random-search candidates) becomes a child run
  `eval_N` with the candidate's instructions and demos (`model.json`) and its score (`eval`), and the trial's run
  gets the metric history `eval` (mlflow.dspy's `log_compiles` / `log_evals`).

API keys stay out: mlflow.dspy drops `api_key` from the LM attributes it records (`sanitize_params`), and
`tests/integration/test_secrets.py` checks the traces with a planted key.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import mlflow
import mlflow.dspy
from mlflow.entities import AssessmentSource, AssessmentSourceType, Metric, SpanType
from mlflow.tracing.constant import TraceMetadataKey

from trainables.record import fields
from trainables.record.schema import Tag
from trainables.vocabulary import TraceMode


class Scored(Protocol):
    pred: Any
    score: float
    rationale: str
    trace_id: str


T = TypeVar("T", bound=Scored)


@contextmanager
def recording(
    tracking_uri: str, experiment_id: str, run: tuple[str, str], traces: TraceMode, sample: float,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> Iterator[EvaluationRuns]:  # fmt: skip
    """Make run `run` = (id, name) the active run of this process, with DSPy autologging set for `traces`; yields
    the trial's evaluation runs (`sample`: the fraction of examples traced). The wait for the trace export at the
    end, and the evaluation runs' last writes that must follow it, are handed to `defer` (to overlap with the
    trial's other writes), else done here."""
    run_id, run_name = run
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)  # traces go to the active experiment, not the run's
    _autolog(
        log_traces=traces != "none",
        log_traces_from_compile=traces == "all",
        # Only with `all`: mlflow.dspy's patched dspy.Evaluate logs each metric call as feedback on the thread's
        # last active trace, which, while the optimizer's evaluations run untraced, is one of our example traces
        # (mlflow 3.17 `dspy.autolog._patch_metric`): it would stack the candidates' scores on the test examples.
        log_traces_from_eval=traces == "all",
        log_compiles=True,
        log_evals=True,
    )
    while mlflow.active_run() is not None:  # left over by a trial that this worker process ran before
        mlflow.end_run()
    # An active model (set by loading or logging one earlier in this process) would link this trial's metrics and
    # traces to that model, possibly in another store.
    mlflow.clear_active_model()
    evaluations = EvaluationRuns(mlflow.MlflowClient(tracking_uri), experiment_id, run_id, run_name,
                                 None if traces == "none" else sample)  # fmt: skip
    try:
        with mlflow.start_run(run_id=run_id):
            yield evaluations
    finally:

        def close() -> None:
            # Traces are exported in the background; they must be in the store before the run counts as done,
            # and before they can be linked to it.
            mlflow.flush_trace_async_logging(terminate=False)
            evaluations.close()

        if defer is None:
            close()
        else:
            defer(close)
        mlflow.clear_active_model()


"""On an evaluation run: the run of the trial it belongs to."""


@dataclass(frozen=True)
class Outcome:
    """One condition's result, as its evaluation run records it."""

    condition: str
    score: float
    """The task's score in percent."""
    examples: int
    trace_ids: list[str]
    borrowed: bool = False
    """Traced elsewhere (a shared baseline: by another trial; an unchanged program: as the baseline), so its traces
    belong to another evaluation run and are linked to this one."""


class EvaluationRuns:
    """Each condition of a trial (baseline, optimized, k0 …) as an MLflow run of its own (`arb.kind = evaluation`,
    `arb.condition`, `arb.trial_run`), which owns the condition's traces: MLflow's Evaluation runs page lists them,
    and its "compare to" pairs two conditions' traces example by example (by request: the example's inputs). Every
    trace is linked to the trial's run as well, whose Traces tab shows both conditions.

    They are not MLflow child runs of the trial: that page (mlflow 3.17) lists the runs without a logged model and
    nests child runs under their parent, so the children of a trial's run (which logs the program) would not show.

    A condition's run is created when the condition is first evaluated (or, for a borrowed one, when the trial
    reports its results); a retried trial finds and reuses its earlier ones. They carry no trial key, so nothing
    that counts, resumes or reports trials sees them."""

    KIND = "evaluation"

    def __init__(self, client: Any, experiment_id: str, parent: str, parent_name: str, sample: float | None):
        self.client, self.experiment_id, self.parent, self.parent_name = client, experiment_id, parent, parent_name
        self.sample = sample
        self._lock = threading.Lock()
        self._runs: dict[str, str] | None = None
        self._outcomes: list[Outcome] | None = None

    def traced(self, condition: str) -> Traced | None:
        """How to trace `condition`'s examples; None when the trial traces nothing."""
        return None if self.sample is None else Traced(self.sample, self.run_for(condition))

    def run_for(self, condition: str) -> str:
        """The id of `condition`'s evaluation run, created on first use (safe from the trial's threads)."""
        with self._lock:
            if self._runs is None:
                mine = f"tags.`{Tag.TRIAL_RUN}` = '{self.parent}' and tags.`arb.kind` = '{self.KIND}'"
                found = self.client.search_runs([self.experiment_id], filter_string=mine)
                self._runs = {r.data.tags.get(Tag.CONDITION, ""): r.info.run_id for r in found}
            if condition not in self._runs:
                tags = {Tag.TRIAL_RUN: self.parent, Tag.KIND: self.KIND, Tag.CONDITION: condition}
                name = f"{self.parent_name} · {condition}"
                run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
                self._runs[condition] = run.info.run_id
            return self._runs[condition]

    def links(self) -> dict[str, str]:
        """Condition -> its evaluation run's id, for the conditions created so far."""
        with self._lock:
            return dict(self._runs or {})

    def done(self, outcomes: list[Outcome]) -> None:
        """The conditions' results, recorded by `close` once the traces are in the store; a condition that traced
        nothing itself (a shared baseline) gets its run now, so that `links` names every one."""
        if self.sample is not None:
            for outcome in outcomes:
                self.run_for(outcome.condition)
        self._outcomes = outcomes

    def close(self) -> None:
        """Link each condition's traces to the trial's run (and a borrowed baseline's to this trial's evaluation run
        too), log its score and end its run; without results (the trial failed), end the runs as failed."""
        if self.sample is None:
            return
        if self._outcomes is None:
            for run_id in (self._runs or {}).values():
                self.client.set_terminated(run_id, status="FAILED")
            return
        now = int(time.time() * 1000)
        for outcome in self._outcomes:
            run_id = self.run_for(outcome.condition)
            for chunk in _chunks(outcome.trace_ids):
                self.client.link_traces_to_run(chunk, self.parent)
                if outcome.borrowed:
                    self.client.link_traces_to_run(chunk, run_id)
            scores = [Metric("score", outcome.score, now, 0), Metric("examples", outcome.examples, now, 0)]
            self.client.log_batch(run_id, metrics=scores, synchronous=True)
            self.client.set_terminated(run_id)


LINKS_PER_REQUEST = 100
"""MLflow 3.17 links at most this many traces to a run per request (`MAX_TRACE_LINKS_PER_REQUEST`)."""


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), LINKS_PER_REQUEST):
        yield ids[start : start + LINKS_PER_REQUEST]


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


@dataclass(frozen=True)
class Traced:
    """How one condition's examples are traced: the fraction sampled (`chosen`) and the condition's evaluation run
    (`EvaluationRuns`), which its traces belong to."""

    sample: float
    run_id: str | None = None


@dataclass(frozen=True)
class Review:
    """What a reviewer of one example needs besides the program's answer: its inputs, its gold answer and the name
    of the task's metric."""

    inputs: dict[str, Any]
    gold: dict[str, Any]
    metric: str


def traced_example(
    work: Callable[[], T], *, example_id: str, condition: str, on: bool, traced: Traced, review: Review
) -> T:
    """Run `work` (one example: the program call and its score) as one trace, or untraced when `on` is false (the
    example is not sampled: `chosen`). The trace's request is the example's inputs and its response the program's
    output fields, as JSON (so one example pairs across conditions in MLflow's comparison, which matches traces by
    request); it carries the gold answer as expectations and the score as feedback named after the task's metric.
    Assessments added while the trace is open travel with it, with no request of their own (mlflow 3.17:
    `TracingClient.log_assessment` keeps them in memory and the store writes them with the trace)."""
    if not on:
        return _untraced(work)

    @mlflow.trace(name=condition, span_type=SpanType.CHAIN)
    def example() -> T:
        done = work()
        span = mlflow.get_current_active_span()
        trace_id = mlflow.get_active_trace_id()
        if span is None or trace_id is None:  # tracing is off in this process
            return done
        span.set_inputs(review.inputs)
        span.set_outputs(fields.outputs(done.pred))
        mlflow.update_current_trace(
            tags={Tag.EXAMPLE_ID: example_id, Tag.CONDITION: condition, Tag.SCORE: f"{done.score:g}"},
            metadata={TraceMetadataKey.SOURCE_RUN: traced.run_id} if traced.run_id else None,
        )
        for name, value in review.gold.items():
            mlflow.log_expectation(trace_id=trace_id, name=name, value=value, source=LABELS, span_id=span.span_id)
        # No `mlflow.assessment.sourceRunId` (as mlflow.genai.evaluate sets): the UI hides an assessment from
        # every run but that one, and the trial's run lists these traces too.
        mlflow.log_feedback(
            trace_id=trace_id, name=review.metric, value=float(done.score), rationale=done.rationale or None,
            source=METRIC, span_id=span.span_id,
        )  # fmt: skip
        done.trace_id = trace_id
        return done

    return example()


LABELS = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="dataset labels")
"""Where the gold answers come from: the dataset's annotators."""
METRIC = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id="arb task metric")
"""Where the scores come from: the task's metric, in code."""


def _untraced(work: Callable[[], T]) -> T:
    # DSPy's callback opens a trace of its own for any program call while tracing is on; MLflow's own switch for
    # "not this call" is what mlflow.dspy uses around compile and evaluate.
    from mlflow.tracing.provider import trace_disabled

    return trace_disabled(work)()
