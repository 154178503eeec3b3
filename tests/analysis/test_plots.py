"""Every PNG of the report keeps its title and labels inside the image, at one row or column and at nine: the
saved image is at least as large as the text the figure draws (a fixed figure size cut the smoke's one-column
heatmap to "on delta, (optimizer · task) ×")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.text import Text

from analysis import plots

LONG = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def _matrix(n: int) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([("mipro", f"task-{i}-with-a-long-name") for i in range(n)])
    return pd.DataFrame(np.linspace(-20, 20, n * n).reshape(n, n), index=index,
                        columns=[f"{LONG}-{j}" for j in range(n)])  # fmt: skip


def _summary(n: int) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([("mipro", f"{LONG}-{i}") for i in range(n)])
    return pd.DataFrame({"baseline": 40.0, "optimized": 50.0, "delta_pp": 10.0, "ci_low": 2.0, "ci_high": 18.0},
                        index=index)  # fmt: skip


def _candidates(n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for k, verdict in enumerate(["reference", "non-inferior", "undecided"]):
            gap = -2.0 * k
            rows.append({"task": f"task-{i}", "program": f"{LONG}-{k}", "usd_per_1k": float(k), "gap_pp": gap,
                         "ci_low": gap - 3, "ci_high": gap + 3, "verdict": verdict, "chosen": k == 1})  # fmt: skip
    return pd.DataFrame(rows)


FIGURES: dict[str, Callable[[int], Figure]] = {
    "delta_matrix": lambda n: plots.heatmap_figure(_matrix(n)),
    "per_model": lambda n: plots.per_model_figure(_summary(n)),
    "routing": lambda n: plots.routing_figure(_candidates(n), 5.0),
}


@pytest.mark.parametrize("n", [1, 9])
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_saved_plots_hold_all_their_text(name: str, n: int, tmp_path: Path) -> None:
    """What the figure draws (`get_tightbbox`: titles, tick and axis labels, annotations, legends; not the tick
    labels of ticks outside the view, which are never drawn) fits in the saved image."""
    fig = FIGURES[name](n)
    fig.set_dpi(plots.DPI)  # measured at the dpi it is saved at (text extents are not quite linear in dpi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    titles = [t.get_text() for t in fig.findobj(Text) if t.get_visible()]
    assert any(t.startswith(("Optimization delta", "Average score", "Cost against")) for t in titles)
    drawn = fig.get_tightbbox(renderer)  # inches
    height, width = imread(plots.save(fig, tmp_path / f"{name}.png")).shape[:2]
    assert width >= drawn.width * plots.DPI - 1 and height >= drawn.height * plots.DPI - 1, (width, height, drawn)
