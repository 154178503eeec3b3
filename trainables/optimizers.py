"""Optimizers by name. Grid files and Ray configs carry the name; the settings are checked before any trial runs.

Every optimizer gets the same request (program, train/val sets, metric, demo cap, seed, student and teacher LMs)
so that `n_labeled` and `demos` mean the same thing whichever optimizer a grid uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy

from grid.errors import ArbError
from trainables.tasks.base import Metric


@dataclass
class CompileRequest:
    """Everything an optimizer may use. `trainset` is exactly the `n_labeled` cut; `valset` is separate."""

    program: dspy.Module
    trainset: list[dspy.Example]
    valset: list[dspy.Example]
    metric: Metric
    demos: int
    seed: int
    student: dspy.LM
    teacher: dspy.LM
    params: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    """Candidate evaluations at once (DSPy's `num_threads`): the trial's share of its server's slots."""


@dataclass(frozen=True)
class Optimizer:
    """A named optimizer: which settings it accepts and how it compiles a program."""

    name: str
    compile: Callable[[CompileRequest], dspy.Module]
    params: frozenset[str] = frozenset()
    """Keys allowed in a grid's `optimizer_params`; anything else is an error, not silently ignored."""
    needs_trainset: bool = True

    def check_params(self, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - self.params)
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ArbError(
                f"optimizer {self.name!r} does not take {', '.join(unknown)}",
                f"remove them from optimizer_params (allowed: {allowed})",
            )
        if self.name == "mipro":
            _check_mipro(params)
        if self.name == "demo_ablation":
            from trainables.ablation import parse_source

            parse_source(params)


def _none(req: CompileRequest) -> dspy.Module:
    return req.program.deepcopy()


def _bootstrap(req: CompileRequest) -> dspy.Module:
    optimizer = dspy.BootstrapFewShot(
        metric=req.metric,
        max_bootstrapped_demos=req.demos,
        max_labeled_demos=req.demos,
        max_rounds=int(req.params.get("max_rounds", 1)),
        teacher_settings={"lm": req.teacher},
    )
    return optimizer.compile(req.program.deepcopy(), trainset=req.trainset)


def _bootstrap_rs(req: CompileRequest) -> dspy.Module:
    optimizer = dspy.BootstrapFewShotWithRandomSearch(
        metric=req.metric,
        max_bootstrapped_demos=req.demos,
        max_labeled_demos=req.demos,
        num_candidate_programs=int(req.params.get("num_candidate_programs", 4)),
        num_threads=req.threads,
        teacher_settings={"lm": req.teacher},
    )
    return optimizer.compile(req.program.deepcopy(), trainset=req.trainset, valset=req.valset)


def _not_a_compile(req: CompileRequest) -> dspy.Module:
    raise ArbError("demo_ablation re-evaluates a stored program; it does not compile", "run it through a trial")


_MIPRO_COMPILE_KEYS = (
    "minibatch",
    "minibatch_size",
    "data_aware_proposer",
    "program_aware_proposer",
    "tip_aware_proposer",
    "fewshot_aware_proposer",
    "view_data_batch_size",
)


def _check_mipro(params: dict[str, Any]) -> None:
    # DSPy refuses `auto` together with explicit candidate/trial counts, but only once compile starts; a grid
    # should fail at load time instead.
    has_auto = params.get("auto") is not None
    explicit = {"num_candidates", "num_trials"} & set(params)
    if not has_auto and not explicit:
        return  # DSPy's default budget, auto="light"
    if has_auto and params["auto"] not in ("light", "medium", "heavy"):
        raise ArbError(f"mipro: auto={params['auto']!r} is not a budget", "use light, medium or heavy")
    if has_auto and explicit:
        raise ArbError(
            f"mipro: `auto` conflicts with {', '.join(sorted(explicit))}",
            "set either auto (light/medium/heavy) or both num_candidates and num_trials",
        )
    if not has_auto and explicit != {"num_candidates", "num_trials"}:
        raise ArbError("mipro: without `auto`, both num_candidates and num_trials are needed", "set both")


def _mipro(req: CompileRequest) -> dspy.Module:
    p = req.params
    optimizer = dspy.MIPROv2(
        metric=req.metric,
        prompt_model=req.teacher,
        task_model=req.student,
        teacher_settings={"lm": req.teacher},
        max_bootstrapped_demos=req.demos,
        max_labeled_demos=req.demos,
        auto=p.get("auto", None if "num_candidates" in p else "light"),
        num_candidates=p.get("num_candidates"),
        num_threads=req.threads,
        seed=req.seed,
        verbose=False,
    )
    compile_kwargs = {k: p[k] for k in _MIPRO_COMPILE_KEYS if k in p}
    return optimizer.compile(
        req.program.deepcopy(),
        trainset=req.trainset,
        valset=req.valset,
        num_trials=p.get("num_trials"),
        seed=req.seed,
        **compile_kwargs,
    )


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer("none", _none, needs_trainset=False),
        Optimizer("bootstrap", _bootstrap, frozenset({"max_rounds"})),
        Optimizer("bootstrap_rs", _bootstrap_rs, frozenset({"num_candidate_programs"})),
        Optimizer("mipro", _mipro, frozenset({"auto", "num_candidates", "num_trials", *_MIPRO_COMPILE_KEYS})),
        # Not a compile: the trial evaluates a stored program with k demos (trainables.ablation).
        Optimizer("demo_ablation", _not_a_compile, frozenset({"source"}), needs_trainset=False),
    )
}
