"""MLflow runs as typed DataFrames: one row per trial, and one row per example and condition.

Columns are declared here as data; everything downstream (tables, plots, dashboard) reads only these frames.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
from mlflow.tracking import MlflowClient

from trainables.record.schema import ABLATION_KS, Metric, Tag, score_k
from trainables.record.tracking import search_all
from trainables.registry import ModelRegistry, load_registry, recorded_registry

TAG_COLUMNS = {Tag.KEY: "trial_key", Tag.STATUS: "status", Tag.PHASE: "phase", Tag.GRID: "grid",
               Tag.TASK_VERSION: "task_version", Tag.TRUNCATED: "truncated",
               Tag.STOP_REASON: "stop_reason"}  # fmt: skip
PARAM_COLUMNS = {"model": "string", "task": "string", "optimizer": "string", "teacher": "string",
                 "provider": "string", "demos": "Int64", "n_labeled": "Int64", "seed": "Int64",
                 "n_eval": "Int64", "n_val": "Int64", "data": "string", "structured": "string", "stopping": "string",
                 "scoring": "string"}  # fmt: skip
METRIC_COLUMNS = (
    Metric.BASELINE_SCORE, Metric.OPTIMIZED_SCORE, Metric.DELTA_PP, Metric.BASELINE_STRICT, Metric.OPTIMIZED_STRICT,
    Metric.N_DEMOS_CHOSEN, Metric.LATENCY_MS_P50, Metric.LATENCY_MS_P95, Metric.PROMPT_TOKENS,
    Metric.COMPLETION_TOKENS, Metric.COST_USD, Metric.OPTIMIZE_SECONDS, Metric.EVAL_SECONDS, Metric.LM_CALLS,
    Metric.OPTIMIZE_LM_CALLS, Metric.TRUNCATED_CALLS, Metric.CONTEXT_ERRORS, Metric.N_EVALUATED, Metric.SEQ_CI_LOW,
    Metric.SEQ_CI_HIGH, Metric.SEQ_P_VALUE, Metric.EVAL_CALLS_SAVED, Metric.EVAL_IN_FLIGHT,
    *(score_k(k) for k in ABLATION_KS),
)  # fmt: skip
RUN_COLUMNS = ["run_id", "experiment", *TAG_COLUMNS.values(), *PARAM_COLUMNS, *METRIC_COLUMNS]
"""Read from MLflow; `typed_runs` adds `api` (from the registry, not the store)."""
EXAMPLE_COLUMNS = [
    "run_id",
    "example_id",
    "condition",
    "score",
    "strict_score",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
]
"""`strict_score` is NaN in tables written before it existed."""
STATUSES = ("finished", "compile_failed", "running", "errored")


def _experiments(client: MlflowClient, grids: list[str] | None) -> list[Any]:
    exps = [e for e in client.search_experiments() if Tag.GRID_SPEC in e.tags]
    if grids:
        exps = [e for e in exps if e.name in grids]
    return exps


def known_grids(tracking_uri: str) -> list[str]:
    """Names of the grids (experiments made by `arb run`) in a store."""
    return sorted(e.name for e in _experiments(MlflowClient(tracking_uri), None))


def split_truncated(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs whose every call fit its context window, runs with a call that may have been cut or was refused)."""
    cut = (
        (runs["truncated"].fillna("false") == "true")
        | (runs[Metric.TRUNCATED_CALLS].fillna(0) > 0)
        | (runs[Metric.CONTEXT_ERRORS].fillna(0) > 0)
    )
    return runs[~cut], runs[cut]


def study_registry(
    tracking_uri: str, grids: list[str] | None = None, given: ModelRegistry | None = None
) -> ModelRegistry:
    """The registry that explains the grids' runs: `given` (a `--models` file) or the shipped one, with the entries
    each grid recorded as it ran (`Tag.MODELS`): they name models only a user's file knew, and, unless
    a file is given, replace the shipped entries (a run's price is the one it ran with)."""
    recorded = [e.tags[Tag.MODELS] for e in _experiments(MlflowClient(tracking_uri), grids) if Tag.MODELS in e.tags]
    return recorded_registry(given or load_registry(), recorded, prefer_recorded=given is None)


def typed_runs(rows: list[dict[str, Any]], registry: ModelRegistry | None = None) -> pd.DataFrame:
    """Rows of run fields as a DataFrame with the declared columns and dtypes (missing ones are NA); `registry`
    (default: the shipped one) says which models are API models."""
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col, dtype in PARAM_COLUMNS.items():
        frame[col] = pd.to_numeric(frame[col]).astype(dtype) if dtype == "Int64" else frame[col].astype(dtype)
    for col in METRIC_COLUMNS:
        frame[col] = pd.to_numeric(frame[col]).astype("float64")
    # Runs logged before the provider param existed: fill it from the registry.
    registry = registry or load_registry()
    known = {name: e.provider for name, e in registry.models.items()}
    frame["provider"] = frame["provider"].fillna(frame["model"].map(known)).fillna("unknown").astype("string")
    frame = mark_api(frame, registry)
    frame["stopping"] = frame["stopping"].fillna("fixed")  # runs logged before the setting existed scored all n_eval
    frame["scoring"] = frame["scoring"].fillna("headline")  # and scored by the task's own metric
    return frame


def mark_api(runs: pd.DataFrame, registry: ModelRegistry) -> pd.DataFrame:
    """`runs` with the column `api`: whether the run's model is an API model by `registry`
    (`ModelEntry.is_api`: served remotely or priced per token); a model the registry does not know is not."""
    api = {name: e.is_api for name, e in registry.models.items()}
    # a plain lookup: `Series.map(...).fillna(False)` fails on pandas 3's Arrow strings for a model not in `api`
    flags = pd.Series([bool(api.get(str(m), False)) for m in runs["model"]], index=runs.index, dtype=bool)
    return runs.assign(api=flags)


def _row(run: Any, experiment: str) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": run.info.run_id, "experiment": experiment}
    row.update({col: run.data.tags.get(tag) for tag, col in TAG_COLUMNS.items()})
    row.update({p: run.data.params.get(p) for p in PARAM_COLUMNS})
    row.update({m: run.data.metrics.get(m) for m in METRIC_COLUMNS})
    row.update(start_time=run.info.start_time or 0, artifact_uri=run.info.artifact_uri)
    return row


def _search(client: MlflowClient, experiment_id: str, since_ms: int = 0) -> list[Any]:
    """Trial runs of one experiment (started at or after `since_ms`), every page."""
    where = "tags.`arb.trial_key` != ''" + (f" and attributes.start_time >= {since_ms}" if since_ms else "")
    return search_all(client, experiment_id, where, page_size=50000)


class ReportCache:
    """What a report loaded, kept for the next one. Done runs (finished, compile_failed) never change, so their
    rows and per-example tables are stored once; later reports ask the store only for runs started since the
    oldest run that was not done yet (per experiment, less a margin for clocks that disagree).

    Files, under `directory` (by default `$ARB_HOME/cache/report/<hash of the tracking URI>`): `runs.parquet`,
    `examples.parquet`, `since.json`. A deleted run stays in the cache: `arb report --no-cache` starts over."""

    MARGIN_MS = 10 * 60 * 1000

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._runs = directory / "runs.parquet"
        self._examples = directory / "examples.parquet"
        self._since = directory / "since.json"

    @classmethod
    def for_store(cls, tracking_uri: str, home: Path) -> ReportCache:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
        return cls(home / "cache" / "report" / digest)

    def since(self) -> dict[str, int]:
        return json.loads(self._since.read_text()) if self._since.exists() else {}

    def runs(self) -> pd.DataFrame | None:
        return pd.read_parquet(self._runs) if self._runs.exists() else None

    def examples(self) -> pd.DataFrame | None:
        return pd.read_parquet(self._examples) if self._examples.exists() else None

    def save(self, rows: pd.DataFrame, since: dict[str, int], examples: pd.DataFrame | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        done = rows[rows["status"].isin(DONE)]
        _atomic(done.reset_index(drop=True), self._runs)
        if examples is not None:
            _atomic(examples[examples["run_id"].isin(set(done["run_id"]))].reset_index(drop=True), self._examples)
        tmp = self._since.with_suffix(".tmp")
        tmp.write_text(json.dumps(since))
        tmp.replace(self._since)


DONE = ("finished", "compile_failed")


def _atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def _raw_runs(tracking_uri: str, grids: list[str] | None, cache: ReportCache | None) -> pd.DataFrame:
    """Run rows with their start time and artifact URI, from the cache where it can, else from the store."""
    client = MlflowClient(tracking_uri)
    cached = cache.runs() if cache is not None else None
    since = cache.since() if cache is not None else {}
    frames, fetched = [], []
    for exp in _experiments(client, grids):
        start = since.get(exp.experiment_id, 0)
        rows = [_row(run, exp.name) for run in _search(client, exp.experiment_id, start)]
        new = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "start_time", "artifact_uri"])
        if cached is not None and start:
            old = cached[(cached["experiment"] == exp.name) & ~cached["run_id"].isin(set(new["run_id"]))]
            new = pd.concat([old, new], ignore_index=True) if not old.empty else new
        frames.append(new)
        fetched.append((exp.experiment_id, rows))
    empty = pd.DataFrame(columns=[*RUN_COLUMNS, "start_time", "artifact_uri"])
    raw = pd.concat(frames, ignore_index=True) if frames else empty
    if cache is not None:
        for exp_id, rows in fetched:
            pending = [r["start_time"] for r in rows if r["status"] not in DONE]
            latest = max((r["start_time"] for r in rows), default=since.get(exp_id, 0))
            since[exp_id] = max(0, min([*pending, latest]) - ReportCache.MARGIN_MS) if rows else since.get(exp_id, 0)
        keep = cached[~cached["experiment"].isin(set(raw["experiment"]))] if cached is not None else None
        cache.save(pd.concat([keep, raw], ignore_index=True) if keep is not None else raw, since)
    return raw


def load_runs(tracking_uri: str, grids: list[str] | None = None, cache: ReportCache | None = None) -> pd.DataFrame:
    """One row per trial run of the given grids (all arb grids by default); `cache` keeps done runs for next time."""
    return typed_runs(_raw_runs(tracking_uri, grids, cache).to_dict("records"), study_registry(tracking_uri, grids))


def load_study(
    tracking_uri: str, grids: list[str] | None = None, cache: ReportCache | None = None, threads: int = 8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and their per-example tables, from the cache where it can (see `ReportCache`)."""
    raw = _raw_runs(tracking_uri, grids, cache)
    cached = cache.examples() if cache is not None else None
    have = set(cached["run_id"]) if cached is not None else set()
    missing = raw[~raw["run_id"].isin(have)]
    fetched = _fetch_examples(tracking_uri, dict(zip(missing["run_id"], missing["artifact_uri"], strict=True)), threads)
    parts = [f for f in (cached, fetched) if f is not None and not f.empty]
    examples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EXAMPLE_COLUMNS)
    if cache is not None and not fetched.empty:
        everything = cache.runs()
        cache.save(everything if everything is not None else raw, cache.since(), examples)
    examples = (
        examples[examples["run_id"].isin(set(raw["run_id"]))].reset_index(drop=True).reindex(columns=EXAMPLE_COLUMNS)
    )
    return typed_runs(raw.to_dict("records"), study_registry(tracking_uri, grids)), examples


def load_examples(tracking_uri: str, run_ids: list[str], threads: int = 8) -> pd.DataFrame:
    """The per-example tables (`examples.csv` artifacts) of the given runs, concatenated."""
    client = MlflowClient(tracking_uri)
    return _fetch_examples(tracking_uri, {r: client.get_run(r).info.artifact_uri for r in run_ids}, threads)


def _fetch_examples(tracking_uri: str, artifact_uris: dict[str, str], threads: int) -> pd.DataFrame:
    """`examples.csv` of each run, read from its artifact location directly (a local file is opened in place;
    anything else is downloaded without another lookup of the run)."""
    import mlflow.artifacts

    def one(item: tuple[str, str]) -> pd.DataFrame | None:
        run_id, root = item
        try:
            if root.startswith(("file:", "/")):
                text = (Path(url2pathname(urlparse(root).path)) / "examples.csv").read_text()
            else:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{root}/examples.csv", tracking_uri=tracking_uri
                )
                text = Path(local).read_text()
        except Exception:  # a run that errored before logging has no table; it simply contributes no pairs
            return None
        frame = pd.read_csv(io.StringIO(text), dtype={"example_id": str})
        frame["run_id"] = run_id
        return frame.reindex(columns=EXAMPLE_COLUMNS)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        frames = [f for f in pool.map(one, artifact_uris.items()) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)


GRID_AXES = ("models", "tasks", "optimizer", "demos", "n_labeled", "seeds", "structured")
"""The axes of a grid file whose cross product is its trials (`grid.spec.GridSpec.size`)."""


def spec_size(spec: dict[str, Any]) -> int:
    """Trials of a grid from the spec its driver stored with the experiment (the JSON of `GridSpec`, validated when
    it was written), read as data: analysis reads the store, it does not load grid files."""
    if spec.get("analysis_of"):
        return 0
    sizes = [spec[axis] for axis in GRID_AXES if axis in spec]
    return math.prod(1 if isinstance(v, str) else len(v) for v in sizes)


def grid_status(tracking_uri: str, grids: list[str] | None = None) -> pd.DataFrame:
    """Per grid: trials expected by its spec, and how many are finished, compile_failed, running, errored, pending."""
    client = MlflowClient(tracking_uri)
    runs = load_runs(tracking_uri, grids)
    rows = []
    for exp in _experiments(client, grids):
        spec = json.loads(exp.tags[Tag.GRID_SPEC])
        expected = spec_size(spec)
        mine = runs[runs["experiment"] == exp.name]
        counts = {s: int((mine["status"] == s).sum()) for s in STATUSES}
        pending = max(expected - sum(counts.values()), 0)
        rows.append({"grid": exp.name, "phase": spec.get("phase", ""), "trials": expected, **counts,
                     "pending": pending, "settings": _settings_note(mine, spec)})  # fmt: skip
    return pd.DataFrame(rows, columns=["grid", "phase", "trials", *STATUSES, "pending", "settings"])


SETTINGS = ("n_eval", "n_val", "data")
"""Settings of the work that a run records as params and a grid spec states once for all its trials."""


def _settings_note(runs: pd.DataFrame, spec: dict[str, Any]) -> str:
    """Whether the grid's runs were made with the settings its stored spec says (`arb run` refuses to mix), or how
    many were not and in what: e.g. runs recorded before trial keys covered these settings."""
    if runs.empty:
        return ""
    off = {}
    for name in SETTINGS:
        if name in spec:
            recorded = runs[name].dropna().astype(str)
            off[name] = int((recorded != str(spec[name])).sum())
    differ = {k: v for k, v in off.items() if v}
    if not differ:
        return "as the grid"
    return "differ: " + ", ".join(f"{n} in {k} run(s) (grid: {spec[n]})" for n, k in differ.items())
