"""`gepa`: DSPy's GEPA. A reflection LM (the teacher) reads the task's textual feedback on a mini-batch and rewrites
the instructions; candidates are kept on a Pareto front over the validation examples. It evolves instructions only:
it adds no demos, whatever `demos` says."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from trainables.errors import ArbError
from trainables.optimizers.base import (
    AUTO_CANDIDATES,
    CompileRequest,
    Optimizer,
    Sizes,
    check_auto,
    positive_int,
    program_demos,
    program_instruction,
)
from trainables.vocabulary import Trial

if TYPE_CHECKING:
    import dspy

BUDGETS = ("auto", "max_metric_calls", "max_full_evals")
MINIBATCH = 3
"""dspy.GEPA's default `reflection_minibatch_size` (dspy 3.4.1)."""
MAX_MERGES = 5
"""dspy.GEPA's default `max_merge_invocations` (dspy 3.4.1)."""


def min_calls(n_val: int, minibatch: int) -> int:
    """Metric calls GEPA needs for a few proposals: the seed's full valset evaluation, then per proposal a minibatch
    on the parent, one on the child, and the child's full valset evaluation when it improves. GEPA users report that
    below `len(valset) + 3·(minibatch + len(valset))` a run makes one proposal or none (issue 26's survey of the
    gepa repository's issues); this is that floor."""
    return n_val + 3 * (minibatch + n_val)


def budget(params: Mapping[str, Any], n_labeled: int, n_val: int) -> int:
    """Metric calls (program runs) dspy.GEPA will make with these settings, as dspy 3.4.1 computes them:
    `max_metric_calls`; `max_full_evals` × (train + val); or `auto`'s budget (`GEPA.auto_budget` for one predictor:
    the seed's valset evaluation, 5 per candidate, N minibatches of 35 and periodic full evaluations)."""
    if params.get("max_metric_calls"):
        return int(str(params["max_metric_calls"]))
    if params.get("max_full_evals"):
        return int(str(params["max_full_evals"])) * (n_labeled + n_val)
    candidates = AUTO_CANDIDATES.get(str(params.get("auto") or "light"), 6)
    steps = int(max(4 * math.log2(candidates), 1.5 * candidates))
    full_evals = (steps + 1) // 5 + 1 + (1 if steps < 5 else 0)
    return n_val + 5 * candidates + 35 * steps + full_evals * n_val


class Gepa(Optimizer):
    name = "gepa"
    params = frozenset(
        {*BUDGETS, "reflection_minibatch_size", "use_merge", "max_merge_invocations",
         "candidate_selection_strategy", "skip_perfect_score"}
    )  # fmt: skip

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        budgets = [k for k in BUDGETS if params.get(k) is not None]
        if len(budgets) > 1:
            raise ArbError(
                f"gepa: {' and '.join(budgets)} are all budgets; GEPA takes exactly one",
                "keep one of auto (light/medium/heavy), max_metric_calls or max_full_evals",
            )
        check_auto(params, self.name)
        minibatch = positive_int(params, "reflection_minibatch_size", self.name) or MINIBATCH
        calls = positive_int(params, "max_metric_calls", self.name)
        full_evals = positive_int(params, "max_full_evals", self.name)
        positive_int(params, "max_merge_invocations", self.name)
        for key in ("use_merge", "skip_perfect_score"):
            if key in params and not isinstance(params[key], bool):
                raise ArbError(f"gepa: {key}={params[key]!r} is not true or false", f"write {key}: true or false")
        if params.get("candidate_selection_strategy", "pareto") not in ("pareto", "current_best"):
            raise ArbError(
                f"gepa: candidate_selection_strategy={params['candidate_selection_strategy']!r} is unknown",
                "use pareto or current_best",
            )
        if 0 in sizes.n_labeled:
            raise ArbError("gepa reflects on training examples, and the grid has n_labeled 0", "use n_labeled ≥ 1")
        floor = min_calls(sizes.n_val, minibatch)
        for n_labeled in sizes.n_labeled:
            # dspy.GEPA turns max_full_evals into metric calls over train + val (dspy 3.4.1, GEPA.compile)
            given = calls if calls is not None else (full_evals * (n_labeled + sizes.n_val) if full_evals else None)
            if given is not None and given < floor:
                raise ArbError(
                    f"gepa: a budget of {given} metric calls (n_labeled {n_labeled}, n_val {sizes.n_val}) is below "
                    f"the {floor} that a few proposals need (n_val + 3·(minibatch {minibatch} + n_val))",
                    f"raise max_metric_calls to at least {floor}, or use auto: light",
                )

    defaults: ClassVar[Mapping[str, Any]] = {
        "reflection_minibatch_size": MINIBATCH, "candidate_selection_strategy": "pareto", "skip_perfect_score": True,
        "use_merge": True, "max_merge_invocations": MAX_MERGES,
    }  # fmt: skip

    def settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults `compile` uses, and its budget: auto="light" when the grid names none."""
        filled = super().settings(params)
        return filled if any(params.get(k) is not None for k in BUDGETS) else {**filled, "auto": "light"}

    def compile(self, request: CompileRequest) -> dspy.Module:
        import dspy

        from trainables.lm.client import refusing_cut_replies

        p = request.params
        if request.feedback is None:
            raise ArbError("gepa needs the task's feedback metric", "give the task a `feedback` function")
        chosen = {k: p[k] for k in BUDGETS if p.get(k) is not None} or {"auto": "light"}
        optimizer = dspy.GEPA(
            metric=request.feedback,
            reflection_lm=request.teacher,
            reflection_minibatch_size=int(p.get("reflection_minibatch_size", MINIBATCH)),
            candidate_selection_strategy=p.get("candidate_selection_strategy", "pareto"),
            skip_perfect_score=bool(p.get("skip_perfect_score", True)),
            use_merge=bool(p.get("use_merge", True)),
            max_merge_invocations=int(p.get("max_merge_invocations", MAX_MERGES)),
            # a reply that breaks the output format is shown to the reflection LM as such, not just scored 0
            add_format_failure_as_feedback=True,
            num_threads=request.threads,
            track_stats=True,  # the candidates and their scores, for MLflow (`candidates` below)
            log_dir=str(request.state_dir) if request.state_dir is not None else None,
            seed=request.seed,
            **chosen,
        )
        with refusing_cut_replies(request.teacher):
            return optimizer.compile(request.program.deepcopy(), trainset=request.trainset,
                                     valset=request.valset or None)  # fmt: skip

    def search_calls(self, trial: Trial) -> float:
        p = trial.optimizer_params
        calls = budget(p, trial.n_labeled, trial.n_val)
        minibatch = int(p.get("reflection_minibatch_size", MINIBATCH))
        return calls + calls / (2 * minibatch + trial.n_val)  # plus about one reflection call per proposal

    def candidates(self, program: dspy.Module) -> list[dict[str, Any]]:
        """dspy.GEPA with `track_stats` keeps them as `detailed_results` (dspy 3.4.1 `DspyGEPAResult`: lineage and
        validation scores)."""
        gepa = program.__dict__.pop("detailed_results", None)
        if gepa is None:
            return []
        return [
            {
                "candidate": i,
                "parents": ",".join(str(p) for p in (gepa.parents[i] or []) if p is not None) or "seed",
                "val_score": 100 * float(gepa.val_aggregate_scores[i]),
                "discovered_after_calls": int(gepa.discovery_eval_counts[i]),
                "best": i == gepa.best_idx,
                "demos": program_demos(candidate),
                "instruction": program_instruction(candidate),
            }
            for i, candidate in enumerate(gepa.candidates)
        ]

    def trial_metrics(self, teacher: dspy.LM) -> dict[str, float]:
        return {"proposals_cut": float(getattr(teacher, "cut_refused", 0))}  # reflections refused as truncated
