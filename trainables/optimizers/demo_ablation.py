"""`demo_ablation`: phase 3. Not a compile: the trial re-evaluates a stored program with its first k demos,
k = 0 … demos (`trainables.ablation` runs it); `optimizer_params.source` names the trial that compiled it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from trainables.errors import ArbError, validation_summary
from trainables.optimizers.base import Optimizer, Sizes
from trainables.vocabulary import Trial


class AblationSource(BaseModel):
    """The trial whose program a demo ablation re-evaluates (same model, task, task version and seed as the
    ablation trial)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: str
    """Grid (MLflow experiment) that ran the source trial, e.g. `phase1`."""
    optimizer: str
    teacher: str | None = None
    demos: int
    n_labeled: int


def parse_source(params: Mapping[str, Any]) -> AblationSource:
    """`optimizer_params.source`, validated; a clear error names what is missing."""
    if "source" not in params:
        raise ArbError(
            "demo_ablation needs `optimizer_params.source` (the trial whose program to ablate)",
            "add e.g. `source: {grid: phase1, optimizer: mipro, teacher: gpt-4o, demos: 5, n_labeled: 200}`",
        )
    try:
        return AblationSource.model_validate(params["source"])
    except ValidationError as exc:
        raise ArbError(f"demo_ablation source: {validation_summary(exc)}", "see trainables/ablation.py") from None


class DemoAblation(Optimizer):
    name = "demo_ablation"
    params = frozenset({"source"})
    compiles = False
    compares = False
    stored_program = True

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        parse_source(params)

    def conditions(self, trial: Trial) -> int:
        return trial.demos + 2  # the baseline, then k = 0 … demos
