"""Static PNG plots for the Markdown report. Plotting only reads the table DataFrames."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.tables import label

DPI = 110


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` with every title, label and annotation inside the image: `bbox_inches="tight"` grows the saved
    area to what the figure's artists occupy (long model names, one-column heatmaps), where a fixed figure size
    cuts them off."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


def delta_heatmap(matrix: pd.DataFrame, path: Path) -> Path:
    """Task × model optimization deltas, diverging around zero."""
    return save(heatmap_figure(matrix), path)


def heatmap_figure(matrix: pd.DataFrame) -> Figure:
    """The figure `delta_heatmap` saves."""
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
    return fig


def per_model_bars(summary: pd.DataFrame, path: Path) -> Path:
    """Average baseline and optimized score per model."""
    return save(per_model_figure(summary), path)


def per_model_figure(summary: pd.DataFrame) -> Figure:
    """The figure `per_model_bars` saves."""
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
    return fig


def routing_chart(candidates: pd.DataFrame, margin_pp: float, path: Path) -> Path:
    """Per task, every program's gap to the reference (pp, with the interval the decision was read from)
    against its price per 1,000 calls; the margin −δ dashed, the reference a star, the chosen program ringed."""
    return save(routing_figure(candidates, margin_pp), path)


def routing_figure(candidates: pd.DataFrame, margin_pp: float) -> Figure:
    """The figure `routing_chart` saves."""
    tasks = sorted(candidates["task"].unique())
    cols = min(3, max(len(tasks), 1))
    rows = max(1, -(-len(tasks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        part = candidates[candidates["task"] == task]
        cost = part["usd_per_1k"].fillna(0.0).to_numpy(dtype=float)
        gap = part["gap_pp"].to_numpy(dtype=float)
        err = np.vstack([gap - part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float) - gap])
        is_ref = (part["verdict"] == "reference").to_numpy()
        ax.errorbar(cost[~is_ref], gap[~is_ref], yerr=err[:, ~is_ref], fmt="o", capsize=3, color="tab:blue")
        ax.plot(cost[is_ref], gap[is_ref], "*", markersize=14, color="tab:orange")
        chosen = part["chosen"].to_numpy(dtype=bool)
        ax.plot(cost[chosen], gap[chosen], "o", markersize=16, mfc="none", mec="tab:green", mew=2)
        for x, y, name in zip(cost, gap, part["program"], strict=True):
            ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.axhline(-margin_pp, linestyle="--", color="tab:red", linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(str(task), fontsize=10)
        ax.set_xlabel("USD per 1,000 calls")
        ax.set_ylabel("gap to reference (pp)")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle(f"Cost against quality; dashed: the margin −{margin_pp:g} pp; ringed: the routing decision")
    fig.tight_layout()
    return fig
