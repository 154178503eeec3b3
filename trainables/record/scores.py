"""What an evaluation of one condition produced, example by example: the per-example table that analysis pairs
across conditions, and the condition's score. `trainables.evaluate` makes these; the record stores and reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dspy


@dataclass
class ExampleRecord:
    """One row of the per-example table that analysis pairs across conditions."""

    example_id: str
    condition: str
    prediction: str
    score: float
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    lm_calls: int
    error: str = ""
    in_flight: int = 1
    """Examples of this trial being evaluated when this one started (itself included)."""
    truncated_calls: int = 0
    """This example's LM calls whose prompt reached the context window (`trainables.lm.client.ContextCheck`)."""
    trace_id: str = ""
    """The example's MLflow trace, if it was traced."""
    strict_score: float | None = None
    """The task's strict score of the same prediction (`Task.strict_score`); None in records written before it."""


@dataclass
class EvalResult:
    """Scores of one condition (e.g. baseline, optimized) on the test examples."""

    condition: str
    records: list[ExampleRecord] = field(default_factory=list)
    corpus_score: float | None = None
    """The task's corpus-level score in [0, 1], for tasks whose metric is not a mean over examples."""
    mean_in_flight: float = 1.0
    """Examples in flight, averaged over the evaluation's wall time."""
    strict_corpus_score: float | None = None
    """The task's strict corpus-level score, for tasks that have a corpus metric."""
    predictions: list[tuple[dspy.Example, Any]] = field(default_factory=list, repr=False)
    """(example, prediction) per record, kept so that batches can be joined under one corpus metric (`joined`)."""

    @property
    def score(self) -> float:
        """The task's score in percent (0-100): its corpus metric if it has one, else the mean per-example metric."""
        if self.corpus_score is not None:
            return 100.0 * self.corpus_score
        return 100.0 * float(np.mean([r.score for r in self.records])) if self.records else 0.0

    @property
    def strict(self) -> float:
        """The strict counterpart of `score` (percent); NaN for records that carry no strict score."""
        if self.strict_corpus_score is not None:
            return 100.0 * self.strict_corpus_score
        values = [r.strict_score for r in self.records]
        if not values or any(v is None for v in values):
            return float("nan")
        return 100.0 * float(np.mean([float(v) for v in values if v is not None]))

    def relabel(self, condition: str) -> EvalResult:
        """The same results under another condition name (a program the optimizer left unchanged)."""
        return replace(self, condition=condition, records=[replace(r, condition=condition) for r in self.records])

    @property
    def parse_failures(self) -> int:
        return sum(r.error == "parse" for r in self.records)

    @property
    def lm_errors(self) -> int:
        return sum(r.error not in ("", "parse") for r in self.records)

    @property
    def context_errors(self) -> int:
        """Examples whose prompt the server refused as longer than its context (llama.cpp, OpenAI)."""
        return sum(r.error == "context_window" for r in self.records)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile([r.latency_ms for r in self.records], q)) if self.records else 0.0

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]
