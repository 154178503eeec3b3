"""`mipro`: DSPy's MIPROv2. Proposes instructions and bootstrapped demo sets, then searches their combinations
with a Bayesian optimizer scored on the validation set."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainables.errors import ArbError
from trainables.optimizers.base import AUTO_CANDIDATES, CompileRequest, Optimizer, Sizes, check_auto
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

COMPILE_KEYS = (
    "minibatch",
    "minibatch_size",
    "data_aware_proposer",
    "program_aware_proposer",
    "tip_aware_proposer",
    "fewshot_aware_proposer",
    "view_data_batch_size",
)
"""Settings that go to `MIPROv2.compile` rather than its constructor."""


class Mipro(Optimizer):
    name = "mipro"
    params = frozenset({"auto", "num_candidates", "num_trials", *COMPILE_KEYS})

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        # DSPy refuses `auto` together with explicit candidate/trial counts, but only once compile starts; a grid
        # should fail at load time instead.
        has_auto = params.get("auto") is not None
        explicit = {"num_candidates", "num_trials"} & set(params)
        if not has_auto and not explicit:
            return  # DSPy's default budget, auto="light"
        check_auto(params, self.name)
        if has_auto and explicit:
            raise ArbError(
                f"mipro: `auto` conflicts with {', '.join(sorted(explicit))}",
                "set either auto (light/medium/heavy) or both num_candidates and num_trials",
            )
        if not has_auto and explicit != {"num_candidates", "num_trials"}:
            raise ArbError("mipro: without `auto`, both num_candidates and num_trials are needed", "set both")

    def settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Without `auto` or explicit counts MIPROv2 runs at auto="light" (`compile`)."""
        explicit = {"auto", "num_candidates", "num_trials"} & {k for k, v in params.items() if v is not None}
        return dict(params) if explicit else {**params, "auto": "light"}

    def compile(self, request: CompileRequest) -> dspy.Module:
        import dspy

        p = request.params
        optimizer = dspy.MIPROv2(
            metric=request.metric,
            prompt_model=request.teacher,
            task_model=request.student,
            teacher_settings={"lm": request.teacher},
            max_bootstrapped_demos=request.demos,
            max_labeled_demos=request.demos,
            auto=p.get("auto", None if "num_candidates" in p else "light"),
            num_candidates=p.get("num_candidates"),
            num_threads=request.threads,
            seed=request.seed,
            verbose=False,
        )
        return optimizer.compile(
            request.program.deepcopy(),
            trainset=request.trainset,
            valset=request.valset,
            num_trials=p.get("num_trials"),
            seed=request.seed,
            **{k: p[k] for k in COMPILE_KEYS if k in p},
        )

    def search_calls(self, trial: Trial) -> float:
        p = trial.optimizer_params
        candidates = int(p.get("num_candidates") or AUTO_CANDIDATES.get(p.get("auto") or "light", 6))
        steps = int(p.get("num_trials") or max(2 * math.log2(max(candidates, 2)), 1.5 * candidates))
        return float(steps * trial.n_val + candidates * (trial.n_labeled + 1))
