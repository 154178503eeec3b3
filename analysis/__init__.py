"""Reading grid results back from MLflow into pandas, and the study's tables built from them."""

from analysis.runs import grid_status, load_runs
from analysis.tables import delta_matrix, per_model_summary

__all__ = ["delta_matrix", "grid_status", "load_runs", "per_model_summary"]
