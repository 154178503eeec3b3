"""The words that grid files and trials share, below both: what a trial is (`Trial`, its key), and which optimizers
exist with the settings each accepts.

`grid/` writes these (a grid file names optimizers and settings; expansion makes `Trial`s) and `trainables/` reads
them (a trial runs one). Neither needs the other's code for it, so this module imports no DSPy and nothing from
`grid/`: `arb plan` checks a grid's optimizer settings without loading an optimizer, and the imports run one way.
The compile functions themselves are in `trainables.optimizers`, keyed by the same names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainables.errors import ArbError, validation_summary

DataSource = str
"""`hub`, `sample`, or an absolute path to a directory laid out like the shipped samples (see `GridSpec.data`)."""
TraceMode = Literal["eval", "all", "none"]
StoppingRule = Literal["fixed", "sequential"]


class Trial(BaseModel):
    """One point of the grid: the plain-data config a Ray Tune trial receives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: str
    phase: str
    model: str
    task: str
    task_version: str
    optimizer: str
    teacher: str | None
    demos: int
    n_labeled: int
    n_val: int
    n_eval: int
    seed: int
    data: DataSource
    structured: bool = False
    """Answer through DSPy's JSON adapter with the output schema enforced by the server (see `GridSpec`)."""
    optimizer_params: dict[str, Any] = Field(default_factory=dict)
    sandbox: Literal["bubblewrap", "rlimits"] = "bubblewrap"
    """Where the code task executes generated code; not part of the key (it changes safety, not the score)."""
    lm_cache: bool = True
    """Whether LM responses are cached (not part of the key: a cached answer is the answer the model gave)."""
    traces: TraceMode = "eval"
    """What is traced (see `GridSpec`; not part of the key: it changes what is recorded, not the score)."""
    trace_sample: float = 1.0
    share_baseline: bool = False
    """Read the baseline from an earlier trial of the same point if one kept it (`trainables.baselines`); set when
    the grid has several optimizers. Not part of the key: the baseline is the same work either way."""
    stopping: StoppingRule = "fixed"
    """`fixed`: both conditions on all `n_eval` test examples; `sequential`: stop when the paired difference is
    decided (`trainables.sequential`), with the four settings below. Part of the key only when sequential."""
    n_min: int = 10
    equivalence_pp: float = 10.0
    check_every: int = 5
    futility: float = 0.0

    def stopping_key(self) -> dict[str, Any]:
        """What the stopping rule adds to the key: nothing for `fixed`, so every key made before it stays valid."""
        if self.stopping == "fixed":
            return {}
        rule = {"rule": self.stopping, "n_min": self.n_min, "equivalence_pp": self.equivalence_pp,
                "check_every": self.check_every, "futility": self.futility}  # fmt: skip
        return {"stopping": rule}

    @property
    def key(self) -> str:
        """Stable hash of exactly the fields that define the work (SPEC "Grid axes"): same key, same work.
        `structured` counts only when set, so that the keys of trials run before it existed stay valid."""
        fields: dict[str, Any] = {"structured": True} if self.structured else {}
        fields.update(self.stopping_key())
        return trial_key(
            model=self.model,
            task=self.task,
            task_version=self.task_version,
            optimizer=self.optimizer,
            teacher=self.teacher,
            demos=self.demos,
            n_labeled=self.n_labeled,
            seed=self.seed,
            **fields,
        )

    @property
    def run_name(self) -> str:
        """How the trial reads in the MLflow UI: `model · task · optimizer · dK · nN` (then `· json` if structured,
        `· seq` if it stops sequentially)."""
        name = f"{self.model} · {self.task} · {self.optimizer} · d{self.demos} · n{self.n_labeled}"
        name = f"{name} · json" if self.structured else name
        return f"{name} · seq" if self.stopping == "sequential" else name


def trial_key(**fields: Any) -> str:
    """sha256 over the canonical JSON of the key fields, shortened to 16 hex digits."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class AblationSource(BaseModel):
    """The trial whose program a demo ablation re-evaluates (same model, task, task version and seed as the
    ablation trial); `optimizer_params.source` of a `demo_ablation` grid (see `trainables.ablation`)."""

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


@dataclass(frozen=True)
class Sizes:
    """The data sizes a grid gives its optimizer: what budget checks compare settings against."""

    n_labeled: tuple[int, ...]
    """Every `n_labeled` of the grid (each is its own trial)."""
    n_val: int


@dataclass(frozen=True)
class OptimizerSettings:
    """A named optimizer as grid files see it: the settings it accepts and the checks they get at load time."""

    name: str
    params: frozenset[str] = frozenset()
    """Keys allowed in a grid's `optimizer_params`; anything else is an error, not silently ignored."""
    check: Callable[[Mapping[str, Any], Sizes], None] | None = None
    """Raises `ArbError` for settings the optimizer would refuse (or waste a trial on) once it runs."""
    compiles: bool = True
    """False for `none` (the baseline is the result) and `demo_ablation` (re-evaluates a stored program)."""

    def check_params(self, params: Mapping[str, Any], sizes: Sizes | None = None) -> None:
        unknown = sorted(set(params) - self.params)
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ArbError(
                f"optimizer {self.name!r} does not take {', '.join(unknown)}",
                f"remove them from optimizer_params (allowed: {allowed})",
            )
        if self.check is not None:
            self.check(params, sizes or Sizes(n_labeled=(), n_val=0))


MIPRO_COMPILE_KEYS = (
    "minibatch",
    "minibatch_size",
    "data_aware_proposer",
    "program_aware_proposer",
    "tip_aware_proposer",
    "fewshot_aware_proposer",
    "view_data_batch_size",
)
AUTO_BUDGETS = ("light", "medium", "heavy")


def _check_mipro(params: Mapping[str, Any], sizes: Sizes) -> None:
    # DSPy refuses `auto` together with explicit candidate/trial counts, but only once compile starts; a grid
    # should fail at load time instead.
    has_auto = params.get("auto") is not None
    explicit = {"num_candidates", "num_trials"} & set(params)
    if not has_auto and not explicit:
        return  # DSPy's default budget, auto="light"
    if has_auto and params["auto"] not in AUTO_BUDGETS:
        raise ArbError(f"mipro: auto={params['auto']!r} is not a budget", "use light, medium or heavy")
    if has_auto and explicit:
        raise ArbError(
            f"mipro: `auto` conflicts with {', '.join(sorted(explicit))}",
            "set either auto (light/medium/heavy) or both num_candidates and num_trials",
        )
    if not has_auto and explicit != {"num_candidates", "num_trials"}:
        raise ArbError("mipro: without `auto`, both num_candidates and num_trials are needed", "set both")


GEPA_BUDGETS = ("auto", "max_metric_calls", "max_full_evals")
GEPA_MINIBATCH = 3
"""dspy.GEPA's default `reflection_minibatch_size` (dspy 3.4.1)."""


def gepa_min_calls(n_val: int, minibatch: int) -> int:
    """Metric calls GEPA needs for a few proposals: the seed's full valset evaluation, then per proposal a minibatch
    on the parent, one on the child, and the child's full valset evaluation when it improves. GEPA users report that
    below `len(valset) + 3·(minibatch + len(valset))` a run makes one proposal or none (issue 26's survey of the
    gepa repository's issues); this is that floor."""
    return n_val + 3 * (minibatch + n_val)


def _positive_int(params: Mapping[str, Any], key: str, who: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArbError(f"{who}: {key}={value!r} is not a positive whole number", f"set {key} to 1 or more")
    return value


def _check_gepa(params: Mapping[str, Any], sizes: Sizes) -> None:
    budgets = [k for k in GEPA_BUDGETS if params.get(k) is not None]
    if len(budgets) > 1:
        raise ArbError(
            f"gepa: {' and '.join(budgets)} are all budgets; GEPA takes exactly one",
            "keep one of auto (light/medium/heavy), max_metric_calls or max_full_evals",
        )
    if params.get("auto") is not None and params["auto"] not in AUTO_BUDGETS:
        raise ArbError(f"gepa: auto={params['auto']!r} is not a budget", "use light, medium or heavy")
    minibatch = _positive_int(params, "reflection_minibatch_size", "gepa") or GEPA_MINIBATCH
    calls = _positive_int(params, "max_metric_calls", "gepa")
    full_evals = _positive_int(params, "max_full_evals", "gepa")
    _positive_int(params, "max_merge_invocations", "gepa")
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
    floor = gepa_min_calls(sizes.n_val, minibatch)
    for n_labeled in sizes.n_labeled:
        # dspy.GEPA turns max_full_evals into metric calls over train + val (dspy 3.4.1, GEPA.compile)
        budget = calls if calls is not None else (full_evals * (n_labeled + sizes.n_val) if full_evals else None)
        if budget is not None and budget < floor:
            raise ArbError(
                f"gepa: a budget of {budget} metric calls (n_labeled {n_labeled}, n_val {sizes.n_val}) is below "
                f"the {floor} that a few proposals need (n_val + 3·(minibatch {minibatch} + n_val))",
                f"raise max_metric_calls to at least {floor}, or use auto: light",
            )


def _check_simba(params: Mapping[str, Any], sizes: Sizes) -> None:
    bsize = _positive_int(params, "bsize", "simba") or SIMBA_BSIZE
    _positive_int(params, "num_candidates", "simba")
    _positive_int(params, "max_steps", "simba")
    too_small = [n for n in sizes.n_labeled if n < bsize]
    if too_small:
        # dspy.SIMBA asserts len(trainset) >= bsize, but only once compile starts
        raise ArbError(
            f"simba: its mini-batch (bsize {bsize}) is larger than n_labeled {too_small[0]}",
            f"set optimizer_params bsize to at most {min(too_small)} or raise n_labeled",
        )


def _check_source(params: Mapping[str, Any], sizes: Sizes) -> None:
    parse_source(params)


SIMBA_BSIZE = 32
"""dspy.SIMBA's default mini-batch (dspy 3.4.1)."""

OPTIMIZER_SETTINGS: dict[str, OptimizerSettings] = {
    o.name: o
    for o in (
        OptimizerSettings("none", compiles=False),
        OptimizerSettings("bootstrap", frozenset({"max_rounds"})),
        OptimizerSettings("bootstrap_rs", frozenset({"num_candidate_programs"})),
        OptimizerSettings(
            "mipro", frozenset({"auto", "num_candidates", "num_trials", *MIPRO_COMPILE_KEYS}), _check_mipro
        ),
        OptimizerSettings(
            "gepa",
            frozenset(
                {
                    *GEPA_BUDGETS,
                    "reflection_minibatch_size",
                    "use_merge",
                    "max_merge_invocations",
                    "candidate_selection_strategy",
                    "skip_perfect_score",
                }
            ),
            _check_gepa,
        ),
        # SIMBA's `max_demos` is the grid's `demos` axis, as every optimizer's demo cap is.
        OptimizerSettings("simba", frozenset({"bsize", "num_candidates", "max_steps"}), _check_simba),
        # Not a compile: the trial evaluates a stored program with k demos (trainables.ablation).
        OptimizerSettings("demo_ablation", frozenset({"source"}), _check_source, compiles=False),
    )
}
"""Every optimizer a grid may name; `trainables.optimizers.COMPILERS` holds the ones that compile."""
