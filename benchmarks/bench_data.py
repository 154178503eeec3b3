"""Benchmark data: the shipped sample files, each split repeated up to N rows, for trials with n_eval > the sample.

Rows keep their dataset's schema; a repeated row gets its own id (`-r1`, `-r2` …), so every example of a split is
distinct to DSPy, the metric and the per-example record. It is our own sample text, repeated: the benchmark needs
volume, not new questions (its simulated models answer every question the same way).

Use:  python benchmarks/bench_data.py DEST --rows 40   (then `data: DEST` in a grid file)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.tasks.base import DATA_DIR  # noqa: E402

ID_FIELDS = ("id", "qid", "task_id")


def generate(dest: Path, rows: int) -> Path:
    """Write every shipped split to `dest/<dataset>/<split>.jsonl` with `rows` rows; returns `dest`."""
    for source in sorted(DATA_DIR.glob("*/*.jsonl")):
        originals = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        out = dest / source.parent.name / source.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as fh:
            for i in range(rows):
                row = dict(originals[i % len(originals)])
                copy = i // len(originals)
                for name in ID_FIELDS:
                    if name in row:  # one type per column (datasets infers it), and unique per row
                        row[name] = f"{row[name]}-r{copy}" if copy else str(row[name])
                fh.write(json.dumps(row) + "\n")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--rows", type=int, default=40, help="rows per split")
    args = parser.parse_args()
    print(generate(args.dest, args.rows))


if __name__ == "__main__":
    main()
