"""Grid files: YAML validated into a typed `GridSpec`, and its expansion into trials.

A grid is the cross product model × task × optimizer × demos × n_labeled × seed (× structured), with one teacher.
Expansion happens here and only here, so the trial key (a stable hash of what defines the work) is computed once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.errors import ArbError, one_line, unknown_name, validation_summary
from trainables.optimizers import OPTIMIZERS, Sizes, get_optimizer
from trainables.registry import ModelRegistry
from trainables.vocabulary import DataSource, Scoring, StoppingRule, TraceMode, Trial, trial_key

PHASES_DIR = Path(__file__).with_name("phases")
_MAX_GRID_BYTES = 256 * 1024  # grid files are hand-written; anything larger is a mistake or an attack
_MAX_INCLUDE_DEPTH = 8

__all__ = ["GridSpec", "Trial", "expand", "load_grid", "resolve_grid_path", "stages", "trial_key"]


def _unique(values: list[Any], field: str) -> list[Any]:
    if not values:
        raise ValueError(f"`{field}` must list at least one value")
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"`{field}` lists duplicates: {', '.join(dupes)}")
    return values


class GridSpec(BaseModel):
    """One grid file, after `include:` is resolved. Every field is documented with its unit or its reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """MLflow experiment name and Ray Tune run directory; one experiment per grid."""
    phase: str = "adhoc"
    """Study phase this grid belongs to (tag `arb.phase`): 1..5, smoke or adhoc."""
    description: str = ""
    models: list[str] = Field(default_factory=list)
    """Student models, by name in the model registry."""
    tasks: list[str] = Field(default_factory=list)
    """Task names from `trainables.tasks.TASKS`."""
    analysis_of: str | None = None
    """For a phase that runs no trials (phase 2): the grid whose runs it analyses; `models`/`tasks` stay empty."""
    then: list[str] = Field(default_factory=list)
    """Grids that `arb run` runs after this one, in order: shipped grid names or paths relative to this file.
    A later grid may read an earlier one's runs (the demo ablation reads its source program)."""
    optimizer: list[str] = Field(default_factory=lambda: ["mipro"])
    """Optimizer name, or a list of names (an axis: each is its own trial, compared on the same test examples), from
    `trainables.optimizers.OPTIMIZERS`: none, bootstrap, bootstrap_rs, mipro, gepa, simba, demo_ablation."""
    teacher: str | None = None
    """Model that bootstraps demos and proposes instructions; null means the student teaches itself."""
    demos: list[int] = Field(default_factory=lambda: [4])
    """Maximum few-shot demos the optimizer may put in the prompt (bootstrapped and labeled alike)."""
    n_labeled: list[int] = Field(default_factory=lambda: [50])
    """Labeled training examples the optimizer may see (the cut of the train split)."""
    n_val: int = Field(default=20, ge=1)
    """Validation examples the optimizer scores candidates on (separate from train and test)."""
    n_eval: int = Field(default=50, ge=1)
    """Test examples per condition (baseline and optimized); with `stopping: sequential`, the most it scores."""
    stopping: StoppingRule = "fixed"
    """`fixed` (default): every trial scores both conditions on all `n_eval` test examples. `sequential`: both
    conditions on the same examples, `check_every` at a time, stopping once an anytime-valid 95% confidence sequence
    for the paired difference excludes 0 (improved / hurt) or lies within ±`equivalence_pp` (no effect that large),
    after at least `n_min` examples (`trainables.stats.sequential`). Part of the trial key only when sequential."""
    n_min: int = Field(default=10, ge=1)
    """Sequential: examples per condition before the first stop is allowed."""
    equivalence_pp: float = Field(default=10.0, gt=0, le=100)
    """Sequential: stop as `equivalent` once the whole sequence lies within ±this many percentage points."""
    check_every: int = Field(default=5, ge=1)
    """Sequential: examples per condition between two looks at the sequence (a batch runs in parallel)."""
    futility: float = Field(default=0.0, ge=0, lt=1)
    """Sequential, opt-in: stop as `futile` when, resampling the differences seen so far, fewer than this share of
    continuations to `n_eval` would decide (e.g. 0.1). Never adds a false "improved"; 0 (default) turns it off."""
    seeds: list[int] = Field(default_factory=lambda: [0])
    """Seeds for data splits and optimizer; each seed is its own trial."""
    structured: list[bool] = Field(default_factory=lambda: [False])
    """Structured outputs, an axis: `false` = DSPy's text field format (ChatAdapter); `true` = DSPy's JSON adapter
    with the output schema enforced by the server (llama.cpp grammar, Ollama `format`, OpenAI structured outputs).
    It changes the prompt, so it is part of the trial key. `[false, true]` measures both."""
    scoring: Scoring = "headline"
    """`headline` (default): each task's own metric, which forgives answer format ("18 dollars" for 18, see
    docs/tasks.md); every example also gets its strict score, and the report splits each gain into format and
    skill. `strict`: the strict score (the study's plain exact match of the answer field) is the headline, what the
    optimizer maximizes and the tables report, to compare a run with the study's published numbers. Part of the
    trial key only when `strict`."""
    data: DataSource = "hub"
    """`hub`: the real Hugging Face datasets, each at the revision its task pins; `sample`: the small hand-written
    files shipped with each task; or an absolute path to a data directory holding, per dataset, either a copy of
    the hub repository at `<dir>/<owner>/<name>/` (e.g. `hf download legacy-datasets/banking77 --repo-type dataset
    --revision <the pinned one> --local-dir <dir>/legacy-datasets/banking77`: a private mirror for clusters without
    hub access) or JSONL files laid out like the samples (`<dir>/gsm8k/test.jsonl`, rows in the dataset's own
    schema). `arb check` says whether every task can read its data. On a cluster, every node must see the path."""
    optimizer_params: dict[str, Any] = Field(default_factory=dict)
    """Extra optimizer settings (e.g. MIPROv2's `auto`, `num_candidates`, `num_trials`); validated per optimizer.
    With one optimizer, its settings (`{auto: light}`); with several, a mapping from optimizer name to its settings
    (`{mipro: {auto: light}, gepa: {max_metric_calls: 60}}`; an optimizer left out runs with its defaults)."""
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    """Cap on trials running at once; null lets Ray use every free slot."""
    trial_cpus: float = Field(default=1.0, gt=0)
    """CPUs Ray reserves per trial (the trial mostly waits on the model server)."""
    sandbox: Literal["bubblewrap", "rlimits"] = "bubblewrap"
    """How the code task runs model-written code: `bubblewrap` (isolated: no network, read-only system, own PID
    namespace) or `rlimits` (weaker opt-in for machines without bubblewrap; recorded as tag `arb.sandbox`)."""
    traces: TraceMode = "eval"
    """MLflow traces of the trial's LM calls, linked to its run: `eval` (default) traces the test-set evaluations,
    one trace per example and condition; `all` also traces the optimizer's calls (many more); `none` traces nothing.
    The optimizer's evaluated candidates are logged as child runs whatever this says."""
    trace_sample: float = Field(default=1.0, gt=0, le=1)
    """Fraction of test examples whose evaluation is traced. The choice is by example id, so the baseline and the
    optimized program are traced on the same examples and can be compared side by side."""
    margin_pp: float = Field(default=5.0, gt=0, le=100)
    """Non-inferiority margin δ (percentage points) of the routing question: a cheaper model may take a task only
    if it is shown at most this much worse than the reference (`trainables.stats.noninferiority`). `arb plan` says how
    many test examples that needs; `arb route` races to it."""
    lm_cache: bool = True
    """Keep LM responses in the node's cache (`$ARB_HOME/cache/lm`, keyed by endpoint and model version), so a
    retried or resumed trial does not pay again for calls it already made; `false` sends every call to the model."""

    @property
    def size(self) -> int:
        """Number of trials the grid expands to (the cross product of its axes)."""
        axes = (self.models, self.tasks, self.optimizer, self.demos, self.n_labeled, self.seeds, self.structured)
        return math.prod(len(axis) for axis in axes)

    def params_for(self, optimizer: str) -> dict[str, Any]:
        """The `optimizer_params` that apply to one of the grid's optimizers."""
        if self._keyed_params():
            return dict(self.optimizer_params.get(optimizer) or {})
        return dict(self.optimizer_params)

    def _keyed_params(self) -> bool:
        """Whether `optimizer_params` maps optimizer names to settings (no optimizer has a setting named after
        another optimizer, so the two shapes cannot be confused)."""
        keys = set(self.optimizer_params)
        return len(self.optimizer) > 1 or (bool(keys) and keys <= set(OPTIMIZERS))

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizers(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # one name stays valid: every grid written before the axis

    @model_validator(mode="after")
    def _params_shape(self) -> GridSpec:
        _unique(self.optimizer, "optimizer")
        if self._keyed_params():
            stray = sorted(set(self.optimizer_params) - set(self.optimizer))
            if stray:
                raise ValueError(
                    f"with several optimizers, `optimizer_params` maps each of {', '.join(self.optimizer)} to its "
                    f"settings; {', '.join(stray)} is not one of them"
                )
            for name, params in self.optimizer_params.items():
                if params is not None and not isinstance(params, dict):
                    raise ValueError(f"`optimizer_params.{name}` must be a mapping of settings")
        return self

    @model_validator(mode="after")
    def _stopping(self) -> GridSpec:
        if self.stopping == "fixed":
            return self
        if self.n_min > self.n_eval:
            raise ValueError(f"`n_min` {self.n_min} is above `n_eval` {self.n_eval}: lower n_min or raise n_eval")
        alone = sorted(o for o in self.optimizer if o in OPTIMIZERS and not OPTIMIZERS[o].compares)
        if alone:
            raise ValueError(
                f"`stopping: sequential` compares baseline and optimized, which optimizer {', '.join(alone)} does "
                "not: use `stopping: fixed` for it"
            )
        return self

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        if v in ("hub", "sample"):
            return v
        if not Path(v).is_absolute():
            raise ValueError(f"`data` is {v!r}: use hub, sample, or an absolute path to a data directory")
        if not Path(v).is_dir():
            raise ValueError(f"`data` directory {v} does not exist")
        return v

    @field_validator("models", "tasks")
    @classmethod
    def _names(cls, v: list[str], info: Any) -> list[str]:
        return _unique(v, info.field_name) if v else v  # emptiness is checked with `analysis_of` below

    @model_validator(mode="after")
    def _trials_or_analysis(self) -> GridSpec:
        if self.analysis_of is None:
            for field in ("models", "tasks"):
                if not getattr(self, field):
                    raise ValueError(f"`{field}` must list at least one value")
        elif self.models or self.tasks:
            raise ValueError("a grid with `analysis_of` runs no trials: remove `models` and `tasks`")
        return self

    @field_validator("structured")
    @classmethod
    def _flags(cls, v: list[bool], info: Any) -> list[bool]:
        return _unique(v, info.field_name)

    @field_validator("demos", "n_labeled", "seeds")
    @classmethod
    def _counts(cls, v: list[int], info: Any) -> list[int]:
        _unique(v, info.field_name)
        if any(x < 0 for x in v):
            raise ValueError(f"`{info.field_name}` must be non-negative")
        return v


def resolve_grid_path(ref: str | Path) -> Path:
    """A grid file path, or the name of a shipped grid (`smoke` -> grid/phases/smoke.yaml)."""
    path = Path(ref)
    if path.exists():
        return path
    shipped = PHASES_DIR / f"{ref}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in PHASES_DIR.glob("*.yaml"))
    raise ArbError(f"grid file {str(ref)!r} not found", f"give a path to a YAML file or one of: {', '.join(names)}")


def _read_yaml(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > _MAX_GRID_BYTES:
        raise ArbError(f"grid file {path} is {size} bytes", f"grid files must be under {_MAX_GRID_BYTES} bytes")
    text = path.read_text()
    try:
        # Aliases are how a "billion laughs" document multiplies itself; grid files have no use for them.
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.AliasToken):
                raise ArbError(f"grid file {path} uses YAML aliases (*name)", "write the values out in full")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArbError(f"grid file {path} is not valid YAML: {one_line(exc)}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ArbError(f"grid file {path} must be a mapping of fields", "see grid/phases/smoke.yaml for the shape")
    return raw


def _merged(path: Path, depth: int = 0) -> dict[str, Any]:
    """The raw mapping of `path` with its `include:` base merged underneath (keys here win)."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise ArbError(f"grid file {path} nests `include:` more than {_MAX_INCLUDE_DEPTH} deep", "remove the cycle")
    raw = _read_yaml(path)
    base_ref = raw.pop("include", None)
    if base_ref is None:
        return raw
    if not isinstance(base_ref, str):
        raise ArbError(f"grid file {path}: `include` must be a file name", "write include: base.yaml")
    base_path = (path.parent / base_ref).resolve()
    if not base_path.is_file():
        what = "a directory" if base_path.is_dir() else "not there"
        raise ArbError(f"grid file {path} includes {base_ref!r}, which is {what}", "include a grid file by its name")
    return {**_merged(base_path, depth + 1), **raw}


def load_grid(ref: str | Path) -> GridSpec:
    """Read, merge includes, and validate a grid file; every problem is an `ArbError` naming the field."""
    path = resolve_grid_path(ref)
    raw = _merged(path)
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as exc:
        raise ArbError(
            f"grid file {path} is invalid: {validation_summary(exc)}", "see the field docs in grid/spec.py"
        ) from None
    # `then` refs are made absolute now, so that `arb resume` finds them from any directory.
    return spec.model_copy(update={"then": [str(_resolve_next(path, ref)) for ref in spec.then]})


def _resolve_next(path: Path, ref: str) -> Path:
    relative = path.parent / ref
    if relative.is_file():
        return relative.resolve()
    try:
        return resolve_grid_path(ref).resolve()
    except ArbError:
        raise ArbError(f"grid file {path}: `then` names {ref!r}, which is neither a file nor a shipped grid",
                       "fix the name or the path (relative to the grid file)") from None  # fmt: skip


def stages(spec: GridSpec, _seen: tuple[str, ...] = ()) -> list[GridSpec]:
    """The grid followed by its `then` grids (recursively, depth first), in the order `arb run` runs them."""
    if spec.name in _seen:
        raise ArbError(f"grid {spec.name!r} runs itself again through `then`", "remove the cycle")
    out = [spec]
    for ref in spec.then:
        out += stages(load_grid(ref), (*_seen, spec.name))
    return out


def expand(spec: GridSpec, registry: ModelRegistry) -> list[Trial]:
    """All trials of a grid, in a stable order; checks every name against its registry first (none for
    an analysis-only grid)."""
    # Imported here so that `arb plan` on a bad file fails fast without loading DSPy.
    from trainables.tasks import TASKS

    if spec.analysis_of is not None:
        return []
    for model in spec.models:
        registry.get(model)
    if spec.teacher is not None:
        registry.get(spec.teacher)
    for task in spec.tasks:
        if task not in TASKS:
            raise unknown_name("task", task, TASKS)
    sizes = Sizes(n_labeled=tuple(spec.n_labeled), n_val=spec.n_val)
    for optimizer in spec.optimizer:
        get_optimizer(optimizer).check_params(spec.params_for(optimizer), sizes)

    return [
        Trial(
            grid=spec.name,
            phase=spec.phase,
            model=model,
            task=task,
            task_version=TASKS[task].version,
            optimizer=optimizer,
            teacher=spec.teacher,
            demos=demos,
            n_labeled=n_labeled,
            n_val=spec.n_val,
            n_eval=spec.n_eval,
            seed=seed,
            data=spec.data,
            structured=structured,
            optimizer_params=get_optimizer(optimizer).settings(spec.params_for(optimizer)),
            scoring=spec.scoring,
            sandbox=spec.sandbox,
            lm_cache=spec.lm_cache,
            traces=spec.traces,
            trace_sample=spec.trace_sample,
            # a sequential trial scores its baseline beside its optimized program, as far as it needs to
            share_baseline=len(spec.optimizer) > 1 and spec.stopping == "fixed",
            stopping=spec.stopping,
            n_min=spec.n_min,
            equivalence_pp=spec.equivalence_pp,
            check_every=spec.check_every,
            futility=spec.futility,
        )
        for model in spec.models
        for task in spec.tasks
        for optimizer in spec.optimizer
        for demos in spec.demos
        for n_labeled in spec.n_labeled
        for seed in spec.seeds
        for structured in spec.structured
    ]
