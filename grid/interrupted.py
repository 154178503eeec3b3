"""Mark the trials a killed sweep left running: `python -m grid.interrupted GRID_NAME --tracking-uri URI`.

deploy/slurm/arb.sbatch calls it once its sweep's driver has stopped: `scancel` signals every process of a job at
once, the MLflow server included, so the trials it cut could not record their end. They are marked in the store
itself (errored, "interrupted"), and `arb resume` runs them again."""

from __future__ import annotations

import argparse
import sys

from trainables.record import tracking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid.interrupted", description=__doc__)
    parser.add_argument("name", help="the grid's name (its MLflow experiment)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else the local store")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        keys = tracking.mark_interrupted(uri, args.name)
    except Exception as exc:
        print(f"arb: could not mark the interrupted trials of {args.name!r} in {uri}: {exc}", file=sys.stderr)
        return 1
    if keys:
        print(f"arb: {len(keys)} trial(s) were cut mid-run and are marked interrupted; `arb resume` runs them again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
