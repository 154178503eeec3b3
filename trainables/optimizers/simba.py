"""`simba`: DSPy's SIMBA. Mini-batches of train examples, sampled programs, and rules or demos proposed from the
ones with the most varied scores. Its `max_demos` is the grid's `demos` axis, as every optimizer's demo cap is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.errors import ArbError
from trainables.optimizers.base import (
    CompileRequest,
    Optimizer,
    Sizes,
    positive_int,
    program_demos,
    program_instruction,
)
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

BSIZE, CANDIDATES, MAX_STEPS = 32, 6, 8
"""dspy.SIMBA's defaults for `bsize`, `num_candidates` and `max_steps` (dspy 3.4.1)."""


class Simba(Optimizer):
    name = "simba"
    params = frozenset({"bsize", "num_candidates", "max_steps"})
    defaults: ClassVar[Mapping[str, Any]] = {"bsize": BSIZE, "num_candidates": CANDIDATES, "max_steps": MAX_STEPS}

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        bsize = positive_int(params, "bsize", self.name) or BSIZE
        positive_int(params, "num_candidates", self.name)
        positive_int(params, "max_steps", self.name)
        too_small = [n for n in sizes.n_labeled if n < bsize]
        if too_small:
            # dspy.SIMBA asserts len(trainset) >= bsize, but only once compile starts
            raise ArbError(
                f"simba: its mini-batch (bsize {bsize}) is larger than n_labeled {too_small[0]}",
                f"set optimizer_params bsize to at most {min(too_small)} or raise n_labeled",
            )

    def compile(self, request: CompileRequest) -> dspy.Module:
        import dspy

        p = request.params
        optimizer = dspy.SIMBA(
            metric=request.metric,
            bsize=int(p.get("bsize", BSIZE)),
            num_candidates=int(p.get("num_candidates", CANDIDATES)),
            max_steps=int(p.get("max_steps", MAX_STEPS)),
            max_demos=request.demos,
            prompt_model=request.teacher,
            teacher_settings={"lm": request.teacher},
            num_threads=request.threads,
        )
        return optimizer.compile(request.program.deepcopy(), trainset=request.trainset, seed=request.seed)

    def search_calls(self, trial: Trial) -> float:
        p = trial.optimizer_params
        bsize, steps = int(p.get("bsize", BSIZE)), int(p.get("max_steps", MAX_STEPS))
        candidates = int(p.get("num_candidates", CANDIDATES))
        # each step: the batch on `candidates` sampled programs, one rule/demo proposal each, the batch on the new
        # ones; then every kept candidate on the whole trainset
        return float(steps * (bsize * candidates * 2 + candidates) + candidates * trial.n_labeled)

    def candidates(self, program: dspy.Module) -> list[dict[str, Any]]:
        """dspy.SIMBA leaves `candidate_programs` (score on the trainset, best first) and `trial_logs` (dspy 3.4.1)."""
        state = program.__dict__
        found = state.pop("candidate_programs", None)
        if not found:
            return []
        state.pop("trial_logs", None)
        return [
            {
                "candidate": i,
                "train_score": 100 * float(entry["score"]),
                "best": i == 0,
                "demos": program_demos(entry["program"]),
                "instruction": program_instruction(entry["program"]),
            }
            for i, entry in enumerate(found)
        ]
