"""`bootstrap`: DSPy's BootstrapFewShot. The teacher runs the train examples and the traces that pass the metric
become demos, up to the grid's `demos`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.optimizers.base import CompileRequest, Optimizer
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

MAX_ROUNDS = 1
"""dspy.BootstrapFewShot's default `max_rounds` (dspy 3.4.1)."""


class Bootstrap(Optimizer):
    name = "bootstrap"
    params = frozenset({"max_rounds"})
    defaults: ClassVar[Mapping[str, Any]] = {"max_rounds": MAX_ROUNDS}

    def compile(self, request: CompileRequest) -> dspy.Module:
        import dspy

        optimizer = dspy.BootstrapFewShot(
            metric=request.metric,
            max_bootstrapped_demos=request.demos,
            max_labeled_demos=request.demos,
            max_rounds=int(request.params.get("max_rounds", MAX_ROUNDS)),
            teacher_settings={"lm": request.teacher},
        )
        return optimizer.compile(request.program.deepcopy(), trainset=request.trainset)

    def search_calls(self, trial: Trial) -> float:
        return float(trial.n_labeled * int(trial.optimizer_params.get("max_rounds", MAX_ROUNDS)))
