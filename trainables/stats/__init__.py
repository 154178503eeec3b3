"""Statistics, no I/O: paired tests, sequential confidence sequences, non-inferiority, the race, power. Imported by
the trial, `grid/` and `analysis/`; imports nothing else of the project."""
