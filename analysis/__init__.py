"""Reading grid results back from MLflow into pandas, the study's tables, statistics, routing advice and reports."""

from analysis.report import build_tables, render, write_report
from analysis.routing import routing_advice
from analysis.runs import grid_status, load_examples, load_runs
from analysis.tables import delta_matrix, per_model_summary, tiers
from trainables.stats.paired import paired_delta

__all__ = [
    "build_tables",
    "delta_matrix",
    "grid_status",
    "load_examples",
    "load_runs",
    "paired_delta",
    "per_model_summary",
    "render",
    "routing_advice",
    "tiers",
    "write_report",
]
