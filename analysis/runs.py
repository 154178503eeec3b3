"""MLflow runs as a typed DataFrame: one row per trial, columns declared here as data."""

from __future__ import annotations

import json

import pandas as pd
from mlflow.tracking import MlflowClient

TAG_COLUMNS = {"arb.trial_key": "trial_key", "arb.status": "status", "arb.phase": "phase", "arb.grid": "grid",
               "arb.task_version": "task_version"}  # fmt: skip
PARAM_COLUMNS = {"model": "string", "task": "string", "optimizer": "string", "teacher": "string",
                 "demos": "Int64", "n_labeled": "Int64", "seed": "Int64", "n_eval": "Int64"}  # fmt: skip
METRIC_COLUMNS = ("baseline_score", "optimized_score", "delta_pp", "n_demos_chosen", "latency_ms_p50",
                  "latency_ms_p95", "prompt_tokens", "completion_tokens", "cost_usd", "optimize_seconds",
                  "eval_seconds", "lm_calls")  # fmt: skip
STATUSES = ("finished", "compile_failed", "running", "errored")


def _experiments(client: MlflowClient, grids: list[str] | None) -> list:
    exps = [e for e in client.search_experiments() if "arb.grid_spec" in e.tags]
    if grids:
        exps = [e for e in exps if e.name in grids]
    return exps


def load_runs(tracking_uri: str, grids: list[str] | None = None) -> pd.DataFrame:
    """One row per trial run of the given grids (all arb grids by default), with typed columns."""
    client = MlflowClient(tracking_uri)
    rows = []
    for exp in _experiments(client, grids):
        for run in client.search_runs([exp.experiment_id], max_results=50000):
            row: dict[str, object] = {"run_id": run.info.run_id, "experiment": exp.name}
            row.update({col: run.data.tags.get(tag) for tag, col in TAG_COLUMNS.items()})
            row.update({p: run.data.params.get(p) for p in PARAM_COLUMNS})
            row.update({m: run.data.metrics.get(m) for m in METRIC_COLUMNS})
            rows.append(row)
    columns = ["run_id", "experiment", *TAG_COLUMNS.values(), *PARAM_COLUMNS, *METRIC_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    for col, dtype in PARAM_COLUMNS.items():
        frame[col] = pd.to_numeric(frame[col]).astype(dtype) if dtype == "Int64" else frame[col].astype(dtype)
    for col in METRIC_COLUMNS:
        frame[col] = pd.to_numeric(frame[col]).astype("float64")
    return frame


def grid_status(tracking_uri: str, grids: list[str] | None = None) -> pd.DataFrame:
    """Per grid: trials expected by its spec, and how many are finished, compile_failed, running, errored, pending."""
    from grid.spec import GridSpec

    client = MlflowClient(tracking_uri)
    runs = load_runs(tracking_uri, grids)
    rows = []
    for exp in _experiments(client, grids):
        spec = GridSpec.model_validate_json(exp.tags["arb.grid_spec"])
        expected = len(spec.models) * len(spec.tasks) * len(spec.demos) * len(spec.n_labeled) * len(spec.seeds)
        mine = runs[runs["experiment"] == exp.name]
        counts = {s: int((mine["status"] == s).sum()) for s in STATUSES}
        pending = max(expected - sum(counts.values()), 0)
        rows.append({"grid": exp.name, "phase": spec.phase, "trials": expected, **counts, "pending": pending})
    return pd.DataFrame(rows, columns=["grid", "phase", "trials", *STATUSES, "pending"])


def spec_json(tracking_uri: str, grid: str) -> dict:
    exp = MlflowClient(tracking_uri).get_experiment_by_name(grid)
    return json.loads(exp.tags["arb.grid_spec"]) if exp else {}
