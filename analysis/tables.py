"""The study's tables as small pure functions from the runs DataFrame to a table DataFrame."""

from __future__ import annotations

import pandas as pd

DONE = ("finished", "compile_failed")


def _done(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"].isin(DONE)]


def per_model_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per model, average baseline and optimized score over tasks, average delta, tasks improved."""
    done = _done(runs)
    grouped = done.groupby("model", observed=True)
    table = pd.DataFrame(
        {
            "tasks": grouped["task"].nunique(),
            "baseline": grouped["baseline_score"].mean(),
            "optimized": grouped["optimized_score"].mean(),
            "delta_pp": grouped["delta_pp"].mean(),
            "improved": grouped["delta_pp"].apply(lambda d: int((d > 0).sum())),
        }
    )
    return table.sort_values("delta_pp", ascending=False).round(2)


def delta_matrix(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: optimization delta (pp), task × model."""
    return _done(runs).pivot_table(index="task", columns="model", values="delta_pp", aggfunc="mean").round(2)
