"""The words that grid files and trials share, below both: what a trial is (`Trial`) and its key.

`grid/` writes these (expansion makes `Trial`s) and `trainables/` reads them (a trial runs one). Neither needs the
other's code for it, so this module imports no DSPy and nothing from `grid/`. The optimizers a trial may name are
in `trainables.optimizers`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DataSource = str
"""`hub`, `sample`, or an absolute path to a directory laid out like the shipped samples (see `GridSpec.data`)."""
TraceMode = Literal["eval", "all", "none"]
StoppingRule = Literal["fixed", "sequential"]
Scoring = Literal["headline", "strict"]


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
    scoring: Scoring = "headline"
    """`headline`: the task's own metric; `strict`: its strict score (plain exact match) is the headline, what the
    optimizer maximizes and the trial reports (see `GridSpec.scoring`). Part of the key only when strict."""
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
    decided (`trainables.stats.sequential`), with the four settings below. Part of the key only when sequential."""
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
    def point_key(self) -> str:
        """Which point of the grid the trial is: model, task and its version (with the data's pinned revision),
        optimizer, teacher, demos, n_labeled, seed (+ structured, scoring, the stopping rule when they are set). It
        was the whole trial key before the key covered the work's settings (`key`): runs recorded then carry it as
        their `arb.trial_key`, and are adopted under the new key when their recorded settings are the trial's
        (`grid.reuse`)."""
        fields: dict[str, Any] = {"structured": True} if self.structured else {}
        fields.update(self.stopping_key())
        if self.scoring != "headline":
            fields["scoring"] = self.scoring
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

    def settings(self) -> dict[str, Any]:
        """What the work depends on beyond the grid point: test and validation examples, the data source, and the
        optimizer's settings with its defaults filled in (`grid.spec.expand` fills them)."""
        return {"n_eval": self.n_eval, "n_val": self.n_val, "data": self.data,
                "optimizer_params": self.optimizer_params}  # fmt: skip

    @property
    def key(self) -> str:
        """Stable hash of exactly what defines the work (SPEC "Grid axes"): same key, same work. The grid point
        (`point_key`) and the settings it is run with (`settings`)."""
        return trial_key(point=self.point_key, **self.settings())

    @property
    def run_name(self) -> str:
        """How the trial reads in the MLflow UI: `model · task · optimizer · dK · nN` (then `· json` if structured,
        `· strict` if scored strictly, `· seq` if it stops sequentially)."""
        name = f"{self.model} · {self.task} · {self.optimizer} · d{self.demos} · n{self.n_labeled}"
        name = f"{name} · json" if self.structured else name
        name = f"{name} · strict" if self.scoring == "strict" else name
        return f"{name} · seq" if self.stopping == "sequential" else name


def trial_key(**fields: Any) -> str:
    """sha256 over the canonical JSON of the key fields, shortened to 16 hex digits."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
