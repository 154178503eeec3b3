"""`bootstrap_rs`: DSPy's BootstrapFewShotWithRandomSearch. Several bootstrapped programs (plus the zero-shot and
labeled-only ones) are scored on the validation set and the best is kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.optimizers.base import CompileRequest, Optimizer
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

CANDIDATE_PROGRAMS = 4
"""The project's default `num_candidate_programs` (DSPy's is 16: too many validation passes for a small model)."""


class BootstrapRandomSearch(Optimizer):
    name = "bootstrap_rs"
    params = frozenset({"num_candidate_programs"})
    defaults: ClassVar[Mapping[str, Any]] = {"num_candidate_programs": CANDIDATE_PROGRAMS}

    def compile(self, request: CompileRequest) -> dspy.Module:
        import dspy

        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            metric=request.metric,
            max_bootstrapped_demos=request.demos,
            max_labeled_demos=request.demos,
            num_candidate_programs=self._candidates(request.params),
            num_threads=request.threads,
            teacher_settings={"lm": request.teacher},
        )
        return optimizer.compile(request.program.deepcopy(), trainset=request.trainset, valset=request.valset)

    def search_calls(self, trial: Trial) -> float:
        # DSPy adds three programs to the candidates (zero-shot, labeled only, unshuffled bootstrap)
        candidates = self._candidates(trial.optimizer_params)
        return float((candidates + 3) * trial.n_val + candidates * trial.n_labeled)

    @staticmethod
    def _candidates(params: dict[str, object]) -> int:
        return int(str(params.get("num_candidate_programs", CANDIDATE_PROGRAMS)))
