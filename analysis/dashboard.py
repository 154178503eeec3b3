"""An offline HTML dashboard of three pages, charts by Plotly with its JavaScript written next to the pages.

Pages: overview and routing advice (`index.html`); task × model deltas (`deltas.html`); phase deep dives:
demo curves, low-data curve, cost/latency against score (`phases.html`). No CDN: opening the files from disk works.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis.tables import label

PAGES = {"index.html": "Overview & routing", "deltas.html": "Task × model deltas", "phases.html": "Phase deep dives"}
_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} nav a{margin-right:1.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3} .chart{margin-bottom:2em} .empty{color:#888;font-style:italic}"""


def _page(title: str, body: list[str]) -> str:
    nav = " ".join(f'<a href="{name}">{html.escape(t)}</a>' for name, t in PAGES.items())
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{_STYLE}</style><script src="plotly.min.js"></script></head>'
        f"<body><nav>{nav}</nav><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>"
    )


def _chart(fig: go.Figure, div_id: str) -> str:
    return '<div class="chart">' + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id) + "</div>"


def _table(frame: pd.DataFrame, caption: str) -> str:
    if frame.empty:
        return f'<h2>{html.escape(caption)}</h2><p class="empty">no runs for this table yet</p>'
    # the index as ordinary columns: a named index would print a second, empty header row
    shown = frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index()
    return f"<h2>{html.escape(caption)}</h2>" + shown.to_html(
        float_format=lambda v: f"{v:.2f}", na_rep="–", border=0, index=False
    )


def _empty(caption: str) -> str:
    return f'<h2>{html.escape(caption)}</h2><p class="empty">no runs for this chart yet</p>'


def write_dashboard(out: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
    """Write the three pages and plotly.min.js into `out`; returns the page paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "plotly.min.js").write_text(get_plotlyjs())

    summary, routing = tables["per_model"], tables["routing"]
    overview = []
    if summary.empty:
        overview.append(_empty("Average score per model"))
    else:
        fig = _delta_bars(
            [label(i) for i in summary.index], summary, "delta_pp", "Average delta per optimizer · model (pp)"
        )
        overview.append(_chart(fig, "per-model"))
    margin = f" (non-inferiority margin δ = {routing['margin_pp'].iloc[0]:g} pp)" if len(routing) else ""
    overview += [_table(routing, f"Routing advice{margin}"), _table(summary, "Per model")]

    matrix, sig = tables["delta_matrix"], tables["significance"]
    deltas = []
    if matrix.empty:
        deltas.append(_empty("Delta matrix"))
    else:
        fig = go.Figure(
            go.Heatmap(
                z=matrix.to_numpy(),
                x=list(matrix.columns),
                y=[label(i) for i in matrix.index],
                colorscale="RdBu",
                zmid=0,
                text=matrix.round(1).to_numpy(),
                texttemplate="%{text}",
                colorbar={"title": "pp"},
            ),
            layout={"title": "Optimization delta (pp), (optimizer · task) × model"},
        )
        deltas.append(_chart(fig, "delta-matrix"))
    if not sig.empty:
        names = [f"{r.model} · {r.task} · {r.optimizer} · n{r.n_labeled}" for r in sig.itertuples()]
        deltas.append(_chart(_delta_bars(names, sig, "delta_pp", "Every delta (pp), paired 95% CI"), "deltas"))
    pairs = tables["optimizers"]
    if not pairs.empty:
        names = [f"{r.model} · {r.task} · n{r.n_labeled}: {r.b} − {r.a}" for r in pairs.itertuples()]
        deltas.append(_chart(_delta_bars(names, pairs, "b_minus_a_pp", "Optimizer against optimizer (pp), paired "
                                         "95% CI"), "optimizers"))  # fmt: skip
    deltas += [_format_or_skill(tables["format"])]
    deltas += [_table(sig, "Every delta with its 95% interval from one test (column test)"),
               _table(pairs, "Optimizers compared"), _table(tables["tiers"], "Tiers")]  # fmt: skip

    phases = [_demo_curves(tables["ablation"]), _low_data(tables["low_data"]), _cost_vs_score(tables["cost"])]
    phases += [_table(tables["reasoning"], "Reasoning models")]

    bodies = {"index.html": overview, "deltas.html": deltas, "phases.html": phases}
    paths = []
    for name, body in bodies.items():
        path = out / name
        path.write_text(_page(PAGES[name], body))
        paths.append(path)
    return paths


def _delta_bars(names: list[str], frame: pd.DataFrame, column: str, title: str) -> go.Figure:
    """One bar per row of `frame`, its paired 95% CI (`ci_low`, `ci_high`) as the error bar when it has one."""
    error = None
    if {"ci_low", "ci_high"} <= set(frame.columns):
        error = {"type": "data", "symmetric": False, "array": (frame["ci_high"] - frame[column]).tolist(),
                 "arrayminus": (frame[column] - frame["ci_low"]).tolist()}  # fmt: skip
    return go.Figure(go.Bar(x=names, y=frame[column], error_y=error), layout={"title": title, "yaxis_title": "pp"})


def _format_or_skill(split: pd.DataFrame) -> str:
    """Each strict gain as two stacked bars, skill (what the task's metric sees) and format (what it forgives),
    then the table with their intervals."""
    caption = "Format or skill: strict gain = skill + format (pp)"
    if split.empty:
        return _empty(caption)
    names = [f"{r.model} · {r.task} · {r.optimizer} · n{r.n_labeled}" for r in split.itertuples()]
    fig = go.Figure(layout={"title": caption, "yaxis_title": "pp", "barmode": "relative"})
    for part, column in (("skill", "skill_pp"), ("format", "format_pp")):
        low, high = split[f"{part}_ci_low"], split[f"{part}_ci_high"]
        error = {"type": "data", "symmetric": False, "array": (high - split[column]).tolist(),
                 "arrayminus": (split[column] - low).tolist()}  # fmt: skip
        fig.add_bar(x=names, y=split[column], name=part, error_y=error)
    return _chart(fig, "format-or-skill") + _table(split, "Format or skill, with paired 95% intervals")


def _demo_curves(ablation: pd.DataFrame) -> str:
    cols = [c for c in ablation.columns if c.startswith("demo_effect_k")]
    if ablation.empty or not cols:
        return _empty("Demo ablation: effect of k demos")
    fig = go.Figure(layout={"title": "Demo effect by k (pp over 0 demos)", "xaxis_title": "k demos"})
    for row in ablation.itertuples():
        ks = [0, *[int(c.removeprefix("demo_effect_k")) for c in cols]]
        fig.add_scatter(x=ks, y=[0.0, *[getattr(row, c) for c in cols]], name=f"{row.model} · {row.task}")
    fig.update_layout(showlegend=True)  # plotly hides the legend of a single series: its name would be lost
    return _chart(fig, "demo-curves")


def _low_data(low: pd.DataFrame) -> str:
    if low.empty:
        return _empty("Low-data tipping point")
    fig = go.Figure(layout={"title": "Optimized score by labeled examples", "xaxis_title": "n labeled"})
    for (model, task, optimizer), g in low.groupby(["model", "task", "optimizer"]):
        fig.add_scatter(
            x=g["n_labeled"], y=g["optimized"], mode="lines+markers", name=f"{model} · {task} · {optimizer}",
            text=g["outcome"],
        )  # fmt: skip
    fig.update_layout(showlegend=True)
    return _chart(fig, "low-data")


def _cost_vs_score(cost: pd.DataFrame) -> str:
    if cost.empty:
        return _empty("Cost and latency against score")
    fig = go.Figure(
        layout={
            "title": "Cost per 1,000 calls against optimized score",
            "xaxis_title": "USD per 1k calls",
            "yaxis_title": "optimized score (%)",
        }
    )
    fig.add_scatter(
        x=cost["usd_per_1k"],
        y=cost["optimized_score"],
        mode="markers+text",  # each point says which model and task it is, without hovering
        text=cost["model"] + " · " + cost["task"],
        textposition="top center",
        marker={"size": 9},
    )
    return _chart(fig, "cost-score")
