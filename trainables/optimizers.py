"""How each optimizer compiles a program, by the name grid files use (`trainables.vocabulary.OPTIMIZER_SETTINGS`
holds the names and checks their settings before any trial runs).

Every optimizer gets the same request (program, train/val sets, metric, demo cap, seed, student and teacher LMs)
so that `n_labeled` and `demos` mean the same thing whichever optimizer a grid uses. The teacher is what each
optimizer calls its strong model: MIPROv2's prompt model, the bootstraps' teacher, GEPA's reflection LM, SIMBA's
prompt model. GEPA evolves instructions only: it adds no demos, whatever `demos` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from trainables.errors import ArbError
from trainables.lm import refusing_cut_replies
from trainables.tasks.base import FeedbackMetric, Metric
from trainables.vocabulary import GEPA_BUDGETS, GEPA_MINIBATCH, MIPRO_COMPILE_KEYS, SIMBA_BSIZE


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
    feedback: FeedbackMetric | None = None
    """The task's metric with textual feedback (GEPA's reflection reads it); scores exactly as `metric` does."""
    state_dir: Path | None = None
    """Where an optimizer that can resume keeps its state (GEPA's `log_dir`): a retried or resumed trial on the
    same node continues from it instead of starting over."""


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
    compile_kwargs = {k: p[k] for k in MIPRO_COMPILE_KEYS if k in p}
    return optimizer.compile(
        req.program.deepcopy(),
        trainset=req.trainset,
        valset=req.valset,
        num_trials=p.get("num_trials"),
        seed=req.seed,
        **compile_kwargs,
    )


def _gepa(req: CompileRequest) -> dspy.Module:
    p = req.params
    if req.feedback is None:
        raise ArbError("gepa needs the task's feedback metric", "give the task a `feedback` function")
    budget = {k: p[k] for k in GEPA_BUDGETS if p.get(k) is not None} or {"auto": "light"}
    optimizer = dspy.GEPA(
        metric=req.feedback,
        reflection_lm=req.teacher,
        reflection_minibatch_size=int(p.get("reflection_minibatch_size", GEPA_MINIBATCH)),
        candidate_selection_strategy=p.get("candidate_selection_strategy", "pareto"),
        skip_perfect_score=bool(p.get("skip_perfect_score", True)),
        use_merge=bool(p.get("use_merge", True)),
        max_merge_invocations=int(p.get("max_merge_invocations", 5)),
        # a reply that breaks the output format is shown to the reflection LM as such, not just scored 0
        add_format_failure_as_feedback=True,
        num_threads=req.threads,
        track_stats=True,  # the candidates and their scores, for MLflow (`trainables.publish.log_candidates`)
        log_dir=str(req.state_dir) if req.state_dir is not None else None,
        seed=req.seed,
        **budget,
    )
    with refusing_cut_replies(req.teacher):
        return optimizer.compile(req.program.deepcopy(), trainset=req.trainset, valset=req.valset or None)


def _simba(req: CompileRequest) -> dspy.Module:
    p = req.params
    optimizer = dspy.SIMBA(
        metric=req.metric,
        bsize=int(p.get("bsize", SIMBA_BSIZE)),
        num_candidates=int(p.get("num_candidates", 6)),
        max_steps=int(p.get("max_steps", 8)),
        max_demos=req.demos,
        prompt_model=req.teacher,
        teacher_settings={"lm": req.teacher},
        num_threads=req.threads,
    )
    return optimizer.compile(req.program.deepcopy(), trainset=req.trainset, seed=req.seed)


COMPILERS: dict[str, Callable[[CompileRequest], dspy.Module]] = {
    "bootstrap": _bootstrap,
    "bootstrap_rs": _bootstrap_rs,
    "mipro": _mipro,
    "gepa": _gepa,
    "simba": _simba,
}
"""Every optimizer of `OPTIMIZER_SETTINGS` that compiles (`none` keeps the program; `demo_ablation` loads one)."""
