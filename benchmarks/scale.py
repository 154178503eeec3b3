"""The driver's cost as the grid grows: 100, 300 and 1,000 trials with near-instant simulated calls.

The same local cluster as benchmarks/cluster_efficiency.py (a Ray head and N worker nodes on 127.0.0.1, each with a
simulated Ollama; MLflow server on PostgreSQL). The grid is 6 models × 9 tasks × S seeds, baseline only, one test
example, calls of `--call-seconds` (default 0.01 s): what is measured is `arb run`'s own process (the driver:
grid expansion, the searcher, Ray Tune's controller, the progress callback), from the kernel's accounting of that
child process (os.wait4): CPU seconds and peak memory. A new MLflow experiment per size, one cluster for all.

  driver overhead per trial = driver CPU seconds / trials

Run:  .venv/bin/python benchmarks/scale.py [--sizes 100 300 1000 --nodes 3 --slots 2]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import record  # noqa: E402
from cluster_efficiency import MODELS, ray_cluster  # noqa: E402
from servers import mlflow_on_postgres  # noqa: E402
from stub_server import StubServer, table_responder  # noqa: E402

from trainables.tasks import TASKS  # noqa: E402


def _grid(path: Path, name: str, seeds: int) -> None:
    path.write_text(
        f"name: {name}\nphase: bench\nmodels: [{', '.join(repr(m) for m in MODELS)}]\n"
        f"tasks: [{', '.join(TASKS)}]\noptimizer: none\ndemos: [0]\nn_labeled: [0]\nn_val: 1\nn_eval: 1\n"
        f"seeds: [{', '.join(str(s) for s in range(seeds))}]\ndata: sample\nlm_cache: false\ntraces: none\n"
    )


def _driver(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run `arb` to the end: (wall seconds, CPU seconds, peak RSS in MiB) of that process alone."""
    start = time.monotonic()
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "grid.cli", *args], cwd=ROOT, env=env, stdout=sink,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stderr is not None
        err = proc.stderr.read()  # drained while it runs: the progress lines must not fill the pipe
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"arb {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.monotonic() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="trials per grid (about)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--call-seconds", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.setdefault("RAY_preload_python_modules", "trainables.trial")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sim = {"slots": args.slots, "call_seconds": args.call_seconds, "load_seconds": 0.0, "max_loaded": len(MODELS)}
    tmp = Path(tempfile.mkdtemp(prefix="arb-scale-"))
    rows = []
    with mlflow_on_postgres(tmp) as mlflow, contextlib.ExitStack() as stack:
        sims = [stack.enter_context(StubServer(MODELS, table_responder({}), **sim)) for _ in range(args.nodes)]
        with ray_cluster(tmp, sims, args.slots, len(MODELS)) as (_, env):
            for size in args.sizes:
                seeds = max(1, math.ceil(size / (len(MODELS) * len(TASKS))))
                trials = seeds * len(MODELS) * len(TASKS)
                grid = tmp / f"scale{trials}.yaml"
                _grid(grid, f"scale{trials}", seeds)
                print(f"{trials} trials …", flush=True)
                calls0 = sum(s.state.calls.total() for s in sims)
                wall, cpu, rss = _driver(["run", str(grid), "--tracking-uri", mlflow.uri], env)
                calls = sum(s.state.calls.total() for s in sims) - calls0
                rows.append((trials, wall, cpu, rss, calls))
                print(f"  {wall:.0f} s wall, driver {cpu:.1f} CPU s, {rss:.0f} MiB", flush=True)
    base = rows[0][2] / rows[0][0]
    lines = [
        *record.heading(),
        f"Local Ray cluster: head + {args.nodes} nodes × {args.slots} slots, simulated Ollama at "
        f"{args.call_seconds} s per call; grid 6 models × 9 tasks × seeds, baseline, n_eval 1, traces none.",
        "",
        "| trials | wall s | wall s / trial | driver CPU s | **driver CPU ms / trial** | vs smallest "
        "| driver peak RSS MiB | LM calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for trials, wall, cpu, rss, calls in rows:
        lines.append(
            f"| {trials} | {wall:.0f} | {wall / trials:.2f} | {cpu:.1f} | **{1000 * cpu / trials:.0f}** | "
            f"{cpu / trials / base:.2f}× | {rss:.0f} | {calls} |"
        )
    record.append("Driver cost at scale (benchmarks/scale.py)", lines)


if __name__ == "__main__":
    main()
