"""Everything that writes the MLflow record: runs and their status, traces, a trial's params/metrics/artifacts,
published programs, datasets and tables, experiment metadata. Imported by the trial, `grid/` and `analysis/`."""
