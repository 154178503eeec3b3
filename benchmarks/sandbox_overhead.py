"""What the code task's sandbox costs per execution, against a bare `python -I -c` subprocess.

Run: .venv/bin/python benchmarks/sandbox_overhead.py [--n 50]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import record

from trainables.tasks.sandbox import interpreter, run_python


def _time(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(1000 * (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    python = interpreter()
    bare = _time(lambda: subprocess.run([python, "-I", "-c", "pass"], check=True), args.n)
    rlimits = _time(lambda: run_python("pass", mode="rlimits"), args.n)
    bwrap = _time(lambda: run_python("pass", mode="bubblewrap"), args.n)
    rows = [("bare subprocess", bare), ("sandbox, rlimits mode", rlimits), ("sandbox, bubblewrap mode", bwrap)]
    lines = [
        *record.heading(),
        "",
        "| execution of `pass` | median ms | p95 ms |",
        "|---|---|---|",
        *[f"| {name} | {statistics.median(t):.1f} | {sorted(t)[int(0.95 * (len(t) - 1))]:.1f} |" for name, t in rows],
        "",
        f"Bubblewrap over a bare subprocess: {statistics.median(bwrap) - statistics.median(bare):+.1f} ms (median).",
    ]
    record.append("Sandbox overhead (benchmarks/sandbox_overhead.py)", lines)


if __name__ == "__main__":
    main()
