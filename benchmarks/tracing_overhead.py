"""What tracing costs per evaluated example, with an LM that answers instantly (so the figure is the overhead alone).

Run: .venv/bin/python benchmarks/tracing_overhead.py [--repeats 20]

Evaluates the sample math program on its test split inside a trial's MLflow run (SQLite store), alternately with
tracing off and on (`trainables.record.tracing`: one trace per example with DSPy's spans, exported in the background and
flushed at the end), and reports the median seconds per example of each and the difference. The share of a real
trial is that difference times its traced examples over its wall time; BENCHMARKS.md has both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy
import mlflow
from record import append, heading

from trainables.evaluate import evaluate
from trainables.lm.client import new_meter
from trainables.record import tracing
from trainables.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    task = get_task("math")
    splits = task.load("sample", 0, 4, 2, 8)
    program = task.program(splits)
    lm = dspy.utils.DummyLM([{"reasoning": "r", "answer": "4"}] * (len(splits.test) * args.repeats * 2 + 10))
    per_example: dict[str, list[float]] = {"off": [], "on": [], "export": []}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        exp = client.create_experiment("tracing-overhead")
        run = client.create_run(exp).info.run_id
        new_meter(run)
        with tracing.recording(uri, exp, (run, "tracing-overhead"), "eval", 1.0):
            evaluate(program, splits.test, task, lm=lm, condition="warmup", traced=tracing.Traced(1.0))
            mlflow.flush_trace_async_logging()
            for i in range(args.repeats):
                for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    t0 = time.perf_counter()
                    traced = tracing.Traced(1.0) if mode == "on" else None
                    evaluate(program, splits.test, task, lm=lm, condition=mode, traced=traced)
                    per_example[mode].append((time.perf_counter() - t0) / len(splits.test))
                    if mode == "on":
                        # the export runs in the background while a real trial waits on its LM; here it is timed
                        # alone, after the evaluation, so that it cannot overlap the next one
                        t0 = time.perf_counter()
                        mlflow.flush_trace_async_logging()
                        per_example["export"].append((time.perf_counter() - t0) / len(splits.test))
        traces = len(mlflow.search_traces(locations=[exp], run_id=run, return_type="list"))
    off, on, export = (statistics.median(per_example[m]) for m in ("off", "on", "export"))
    append(
        "Tracing overhead (benchmarks/tracing_overhead.py)",
        [
            *heading(),
            "",
            f"Instant LM, {len(splits.test)} math examples × {args.repeats} repeats per mode, SQLite store; "
            f"{traces} traces stored.",
            "",
            "| per evaluated example | median |",
            "|---|---|",
            f"| untraced evaluation | {1000 * off:.1f} ms |",
            f"| traced evaluation (spans built in the trial's thread) | {1000 * on:.1f} ms |",
            f"| **in the trial's thread: overhead** | **{1000 * (on - off):.1f} ms** |",
            f"| export to the store (MLflow's background thread; the trial waits only for what is left at its end) "
            f"| {1000 * export:.1f} ms |",
        ],
    )


if __name__ == "__main__":
    main()
