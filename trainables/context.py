"""Where a trial runs (`Runtime`, from the driver) and what one trial works with once it started (`TrialContext`):
the pieces every step of the trial's story needs, passed as one typed object instead of tuples of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field

from trainables.evaluate import evaluate
from trainables.lm.client import Endpoint, Meter, MeteredLM
from trainables.optimizers import Optimizer
from trainables.record.scores import EvalResult
from trainables.record.tracing import EvaluationRuns
from trainables.registry import ModelEntry, ModelRegistry, load_registry
from trainables.tasks import Splits, Task
from trainables.timing import Pace
from trainables.vocabulary import Trial


class Runtime(BaseModel):
    """Where a trial runs, as opposed to what it computes: none of this is part of the trial key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str
    experiment_id: str
    registry_path: str | None = None
    registry: dict[str, Any] | None = None
    """The registry the driver validated, as data (it holds names of key variables, never keys); wins over the path,
    so workers on other nodes use exactly the models the driver checked."""

    def model_registry(self) -> ModelRegistry:
        if self.registry is not None:
            return ModelRegistry.model_validate(self.registry)
        return load_registry(self.registry_path)

    endpoints: dict[str, str] = Field(default_factory=dict)
    """Base URLs that override the registry per model name (the embedded servers' ports are chosen at run time)."""
    timeouts: dict[str, float] = Field(default_factory=dict)
    """Per-call timeouts (seconds) that override the registry per model name: for the embedded servers, set from
    their measured speed and `max_tokens` (`grid.embedded.call_timeout`)."""
    versions: dict[str, str] = Field(default_factory=dict)
    """What each overridden endpoint serves (`grid.embedded.served_identity`): the LM cache's key for its answers."""


def endpoint_for(runtime: Runtime, name: str, entry: ModelEntry) -> Endpoint:
    """Where to reach a model (and which version answers there): the driver's override (embedded servers), else
    where its provider says: this node's server for Ollama and vLLM, checked to answer and serve the model before
    any work is done (`Provider.serve`, whose answer keys the LM cache)."""
    if name in runtime.endpoints:
        return Endpoint(runtime.endpoints[name], runtime.versions.get(name), runtime.timeouts.get(name))
    provider = entry.provider_spec
    host = provider.node_endpoint(entry)
    version = provider.serve(host, entry) if host is not None else None
    return Endpoint(host, version)


@dataclass
class TrialOutcome:
    """What a trial's work hands back to be committed: its status, metrics, artifacts (name → text) and tags."""

    status: str
    metrics: dict[str, float]
    artifacts: dict[str, str]
    tags: dict[str, str]


@dataclass
class TrialContext:
    """One running trial: what it computes (trial, task, splits, optimizer), with what (LMs, their registry
    entries, the meter that counts their calls) and how (its evaluation runs, its pace)."""

    trial: Trial
    runtime: Runtime
    task: Task
    splits: Splits
    optimizer: Optimizer
    student: MeteredLM
    teacher: MeteredLM
    student_entry: ModelEntry
    teacher_entry: ModelEntry
    meter: Meter
    evals: EvaluationRuns
    pace: Pace

    @property
    def run_id(self) -> str:
        return self.evals.parent

    def evaluate(
        self, program: dspy.Module, condition: str, examples: list[dspy.Example] | None = None, stage: str = ""
    ) -> EvalResult:
        """`program` on the test examples (or `examples`) with the student, traced into `condition`'s evaluation
        run; its calls are metered under `stage` (`baseline` or `optimized`, from the condition by default)."""
        self.meter.stage = stage or ("baseline" if condition == "baseline" else "optimized")
        with self.pace.phases.phase("eval"):
            return evaluate(program, self.splits.test if examples is None else examples, self.task, lm=self.student,
                            condition=condition, traced=self.evals.traced(condition),
                            concurrency=self.pace.limit)  # fmt: skip
