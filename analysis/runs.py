"""MLflow runs as typed DataFrames: one row per trial, and one row per example and condition.

Columns are declared here as data; everything downstream (tables, plots, dashboard) reads only these frames.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from grid.registry import load_registry

TAG_COLUMNS = {"arb.trial_key": "trial_key", "arb.status": "status", "arb.phase": "phase", "arb.grid": "grid",
               "arb.task_version": "task_version"}  # fmt: skip
PARAM_COLUMNS = {"model": "string", "task": "string", "optimizer": "string", "teacher": "string",
                 "provider": "string", "demos": "Int64", "n_labeled": "Int64", "seed": "Int64",
                 "n_eval": "Int64"}  # fmt: skip
METRIC_COLUMNS = ("baseline_score", "optimized_score", "delta_pp", "n_demos_chosen", "latency_ms_p50",
                  "latency_ms_p95", "prompt_tokens", "completion_tokens", "cost_usd", "optimize_seconds",
                  "eval_seconds", "lm_calls", *(f"score_k{k}" for k in range(6)))  # fmt: skip
RUN_COLUMNS = ["run_id", "experiment", *TAG_COLUMNS.values(), *PARAM_COLUMNS, *METRIC_COLUMNS]
EXAMPLE_COLUMNS = ["run_id", "example_id", "condition", "score", "latency_ms", "prompt_tokens", "completion_tokens"]
STATUSES = ("finished", "compile_failed", "running", "errored")


def _experiments(client: MlflowClient, grids: list[str] | None) -> list[Any]:
    exps = [e for e in client.search_experiments() if "arb.grid_spec" in e.tags]
    if grids:
        exps = [e for e in exps if e.name in grids]
    return exps


def typed_runs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of run fields as a DataFrame with the declared columns and dtypes (missing ones are NA)."""
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col, dtype in PARAM_COLUMNS.items():
        frame[col] = pd.to_numeric(frame[col]).astype(dtype) if dtype == "Int64" else frame[col].astype(dtype)
    for col in METRIC_COLUMNS:
        frame[col] = pd.to_numeric(frame[col]).astype("float64")
    # Runs logged before the provider param existed: fill it from the shipped registry.
    known = {name: e.provider for name, e in load_registry().models.items()}
    frame["provider"] = frame["provider"].fillna(frame["model"].map(known)).fillna("unknown").astype("string")
    return frame


def load_runs(tracking_uri: str, grids: list[str] | None = None) -> pd.DataFrame:
    """One row per trial run of the given grids (all arb grids by default)."""
    client = MlflowClient(tracking_uri)
    rows = []
    for exp in _experiments(client, grids):
        for run in client.search_runs(
            [exp.experiment_id], filter_string="tags.`arb.trial_key` != ''", max_results=50000
        ):
            row: dict[str, Any] = {"run_id": run.info.run_id, "experiment": exp.name}
            row.update({col: run.data.tags.get(tag) for tag, col in TAG_COLUMNS.items()})
            row.update({p: run.data.params.get(p) for p in PARAM_COLUMNS})
            row.update({m: run.data.metrics.get(m) for m in METRIC_COLUMNS})
            rows.append(row)
    return typed_runs(rows)


def load_examples(tracking_uri: str, run_ids: list[str], threads: int = 8) -> pd.DataFrame:
    """The per-example tables (`examples.csv` artifacts) of the given runs, concatenated."""
    client = MlflowClient(tracking_uri)

    def one(run_id: str) -> pd.DataFrame | None:
        try:
            text = Path(client.download_artifacts(run_id, "examples.csv")).read_text()
        except Exception:  # a run that errored before logging has no table; it simply contributes no pairs
            return None
        frame = pd.read_csv(io.StringIO(text), dtype={"example_id": str})
        frame["run_id"] = run_id
        return frame[EXAMPLE_COLUMNS]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        frames = [f for f in pool.map(one, run_ids) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)


def grid_status(tracking_uri: str, grids: list[str] | None = None) -> pd.DataFrame:
    """Per grid: trials expected by its spec, and how many are finished, compile_failed, running, errored, pending."""
    from grid.spec import GridSpec

    client = MlflowClient(tracking_uri)
    runs = load_runs(tracking_uri, grids)
    rows = []
    for exp in _experiments(client, grids):
        spec = GridSpec.model_validate_json(exp.tags["arb.grid_spec"])
        expected = spec.size
        mine = runs[runs["experiment"] == exp.name]
        counts = {s: int((mine["status"] == s).sum()) for s in STATUSES}
        pending = max(expected - sum(counts.values()), 0)
        rows.append({"grid": exp.name, "phase": spec.phase, "trials": expected, **counts, "pending": pending})
    return pd.DataFrame(rows, columns=["grid", "phase", "trials", *STATUSES, "pending"])
