"""`arb report`: the tables for a set of grids, written as Markdown and CSV."""

from __future__ import annotations

from pathlib import Path

from analysis.runs import load_runs
from analysis.tables import delta_matrix, per_model_summary
from grid.errors import ArbError


def write_report(tracking_uri: str, grids: list[str] | None, out: Path) -> Path:
    """Write `summary.md` and one CSV per table to `out`; returns the Markdown path."""
    runs = load_runs(tracking_uri, grids)
    if runs.empty:
        raise ArbError(f"no runs for {grids or 'any grid'} in {tracking_uri}", "run a grid first (`arb run smoke`)")
    out.mkdir(parents=True, exist_ok=True)
    tables = {"per_model": per_model_summary(runs), "delta_matrix": delta_matrix(runs)}
    lines = [f"# Report: {', '.join(sorted(runs['experiment'].unique()))}", ""]
    titles = {
        "per_model": "Per model (average over tasks)",
        "delta_matrix": "Optimization delta (pp), task × model",
    }
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv")
        lines += [f"## {titles[name]}", "", table.to_markdown(), ""]
    runs.to_csv(out / "runs.csv", index=False)
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path
