"""What an optimizer is to the project: one object that knows its settings, how it compiles, what it costs, and
what it leaves for the record. Each lives in its own module of this folder and is registered by name in
`trainables.optimizers`.

DSPy is imported inside `compile` only: `arb plan` checks a grid's settings and estimates its calls without
loading DSPy (and a driver without it stays quick to start).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.errors import ArbError
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

    from trainables.tasks.base import FeedbackMetric, Metric

AUTO_BUDGETS = ("light", "medium", "heavy")
AUTO_CANDIDATES = {"light": 6, "medium": 12, "heavy": 18}
"""Candidates per `auto` budget: DSPy's MIPROv2 AUTO_RUN_SETTINGS["n"], which GEPA's `auto` reuses (dspy 3.4.1)."""


@dataclass(frozen=True)
class Sizes:
    """The data sizes a grid gives its optimizer: what budget checks compare settings against."""

    n_labeled: tuple[int, ...]
    """Every `n_labeled` of the grid (each is its own trial)."""
    n_val: int


@dataclass
class CompileRequest:
    """Everything an optimizer may use. `trainset` is exactly the `n_labeled` cut; `valset` is separate.

    Every optimizer gets the same request so that `n_labeled` and `demos` mean the same thing whichever one a grid
    uses. The teacher is what each optimizer calls its strong model: MIPROv2's prompt model, the bootstraps'
    teacher, GEPA's reflection LM, SIMBA's prompt model."""

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
    feedback: FeedbackMetric | None = None
    """The task's metric with textual feedback (GEPA's reflection reads it); scores exactly as `metric` does."""
    state_dir: Path | None = None
    """Where an optimizer that can resume keeps its state (GEPA's `log_dir`): a retried or resumed trial on the
    same node continues from it instead of starting over."""


class Optimizer:
    """A named optimizer. Subclasses set the class attributes and override what differs from the defaults."""

    name: ClassVar[str]
    params: ClassVar[frozenset[str]] = frozenset()
    """Keys allowed in a grid's `optimizer_params`; anything else is an error, not silently ignored."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """What the optimizer uses for a setting the grid leaves out (`settings`)."""
    compiles: ClassVar[bool] = True
    """False when the trial's program is not compiled here (the baseline kept, a stored program re-evaluated)."""
    compares: ClassVar[bool] = True
    """Whether a trial has a baseline and an optimized program to compare (what `stopping: sequential` needs)."""
    stored_program: ClassVar[bool] = False
    """The trial re-evaluates a program another trial compiled (the demo ablation) instead of compiling one."""

    def check_params(self, params: Mapping[str, Any], sizes: Sizes | None = None) -> None:
        """Raise `ArbError` for unknown keys, or settings the optimizer would refuse (or waste a trial on) once it
        runs: a grid fails at load time instead."""
        unknown = sorted(set(params) - self.params)
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ArbError(
                f"optimizer {self.name!r} does not take {', '.join(unknown)}",
                f"remove them from optimizer_params (allowed: {allowed})",
            )
        self.check(params, sizes or Sizes(n_labeled=(), n_val=0))

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        """Checks beyond the allowed keys; none by default."""

    def settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` with the defaults the optimizer would use filled in: the same work whether a grid writes a
        default or leaves it out, so both give one trial key (`Trial.settings`)."""
        return {**self.defaults, **params}

    def compile(self, request: CompileRequest) -> dspy.Module:
        raise NotImplementedError(f"optimizer {self.name!r} does not compile")

    def conditions(self, trial: Trial) -> int:
        """Programs the trial evaluates on the test set: the baseline and the optimized one."""
        return 2

    def search_calls(self, trial: Trial) -> float:
        """LM calls the search makes at one call per example and step, beyond the test evaluations."""
        return 0.0

    def candidates(self, program: dspy.Module) -> list[dict[str, Any]]:
        """The candidates the optimizer left on the compiled program, as table rows, removed from the program (it
        would otherwise pickle every candidate into the logged model). None by default: MIPROv2's and random
        search's candidates are child runs already (`mlflow.dspy.autolog`)."""
        return []

    def trial_metrics(self, teacher: dspy.LM) -> dict[str, float]:
        """Metrics only this optimizer's trials have."""
        return {}


def expected_calls(optimizer: Optimizer, trial: Trial) -> float:
    """LM calls a trial would make at one call per example and optimizer step (before learned corrections)."""
    return float(trial.n_eval * optimizer.conditions(trial)) + optimizer.search_calls(trial)


def positive_int(params: Mapping[str, Any], key: str, who: str) -> int | None:
    """`params[key]` if set, checked to be a whole number ≥ 1."""
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArbError(f"{who}: {key}={value!r} is not a positive whole number", f"set {key} to 1 or more")
    return value


def check_auto(params: Mapping[str, Any], who: str) -> None:
    if params.get("auto") is not None and params["auto"] not in AUTO_BUDGETS:
        raise ArbError(f"{who}: auto={params['auto']!r} is not a budget", "use light, medium or heavy")


def program_instruction(program: dspy.Module) -> str:
    """A candidate's instructions, one predictor per line, for a candidates table."""
    from trainables.record.tracking import redact

    return redact("\n".join(p.signature.instructions for _, p in program.named_predictors()))


def program_demos(program: dspy.Module) -> int:
    return sum(len(p.demos) for p in program.predictors())
