"""Static PNG plots for the Markdown report. Plotting only reads the table DataFrames."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.tables import label


def delta_heatmap(matrix: pd.DataFrame, path: Path) -> Path:
    """Task × model optimization deltas, diverging around zero."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(matrix.columns), 1), 1 + 0.5 * max(len(matrix), 1)))
    values = matrix.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if values.size and not np.all(np.isnan(values)) else 1.0
    im = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.index)), [label(i) for i in matrix.index])
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="delta (pp)")
    ax.set_title("Optimization delta, (optimizer · task) × model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_model_bars(summary: pd.DataFrame, path: Path) -> Path:
    """Average baseline and optimized score per model."""
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * max(len(summary), 1), 3.5))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, summary["baseline"], 0.4, label="baseline")
    err = None
    if {"ci_low", "ci_high"} <= set(summary.columns):
        # the interval is the delta's; drawn on the optimized bar, around baseline + delta
        err = np.vstack([summary["delta_pp"] - summary["ci_low"], summary["ci_high"] - summary["delta_pp"]])
    ax.bar(x + 0.2, summary["optimized"], 0.4, label="optimized (error bar: paired 95% CI of the delta)", yerr=err,
           capsize=3)  # fmt: skip
    ax.set_xticks(x, [label(i) for i in summary.index], rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=7)
    ax.set_title("Average score per optimizer · model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
