"""How long `arb report` takes on many synthetic runs (issue: analysis at scale).

Run: .venv/bin/python benchmarks/report_scale.py --runs 10000 [--mlflow 10000]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.

`render` is timed on N runs × 50 examples built in memory (tables, statistics, plots, dashboard). With --mlflow M,
loading M runs and their per-example artifacts back from a local SQLite MLflow store is timed as well, so the
cost of the store can be read separately from the cost of the analysis.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic import MODELS, _row, paired_examples

from analysis.report import render
from analysis.runs import typed_runs
from trainables.registry import load_registry

TASKS = ["agentic", "analysis", "classification", "code", "extraction", "math", "qa", "rag", "synthesis"]


def synthetic(n_runs: int, n_examples: int = 50, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, frames = [], []
    for i in range(n_runs):
        model, task = MODELS[i % len(MODELS)], TASKS[(i // len(MODELS)) % len(TASKS)]
        base = (rng.random(n_examples) < rng.uniform(0.3, 0.7)).astype(float)
        opt = np.where(rng.random(n_examples) < 0.2, 1.0 - base, base)
        rows.append(
            _row(f"r{i}", model, task, 100 * base.mean(), 100 * opt.mean(), seed=i // 54, n_demos_chosen=5 * (i % 2))
        )
        frames.append(paired_examples(f"r{i}", base.tolist(), opt.tolist()))
    return typed_runs(rows), pd.concat(frames, ignore_index=True)


def _mlflow_load(n: int) -> tuple[float, float, float]:
    """Seconds to build a SQLite store of `n` finished trial runs, then for a first report's load (nothing cached)
    and a second one (every run done, so cached)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from analysis.runs import ReportCache, load_study
    from grid.spec import GridSpec
    from trainables.record import tracking

    runs, examples = synthetic(n)
    by_run = dict(tuple(examples.groupby("run_id")))
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        t0 = time.perf_counter()
        exp = tracking.ensure_experiment(uri, "scale")
        client = MlflowClient(uri)
        client.set_experiment_tag(
            exp, "arb.grid_spec", GridSpec(name="scale", models=MODELS, tasks=TASKS).model_dump_json()
        )
        for run in runs.itertuples():
            r = client.create_run(exp, tags={"arb.trial_key": run.run_id, "arb.status": "finished", "arb.phase": "1"})
            params = [Param(k, str(getattr(run, k))) for k in ("model", "task", "optimizer")]
            client.log_batch(r.info.run_id, params=params)
            # written where the run's artifacts live, as log_artifact would (the store is local)
            root = Path(r.info.artifact_uri.removeprefix("file://"))
            root.mkdir(parents=True, exist_ok=True)
            by_run[run.run_id].drop(columns=["run_id"]).to_csv(root / "examples.csv", index=False)
        build = time.perf_counter() - t0
        cache = ReportCache(Path(tmp) / "cache")
        t0 = time.perf_counter()
        loaded, _ = load_study(uri, None, cache)
        first = time.perf_counter() - t0
        assert len(loaded) == n
        t0 = time.perf_counter()
        again, _ = load_study(uri, None, cache)
        second = time.perf_counter() - t0
        assert len(again) == n
        return build, first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--mlflow", type=int, default=0, help="also time loading this many runs from MLflow")
    args = parser.parse_args()

    t0 = time.perf_counter()
    runs, examples = synthetic(args.runs)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        render(runs, examples, load_registry(), Path(out))
        took = time.perf_counter() - t0
    lines = [
        f"\n## Report at scale — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Command: `.venv/bin/python benchmarks/report_scale.py --runs {args.runs} --mlflow {args.mlflow}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "",
        f"- render (tables, paired statistics, plots, dashboard), {args.runs} runs × 50 examples: **{took:.1f} s**"
        f" (building the synthetic frames: {build:.1f} s)",
    ]
    if args.mlflow:
        build, first, second = _mlflow_load(args.mlflow)
        lines.append(
            f"- loading {args.mlflow} runs + their example tables from a SQLite MLflow store (`load_study`): first "
            f"report **{first:.1f} s** (nothing cached), second **{second:.1f} s** (done runs cached); "
            f"building the store took {build:.0f} s"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
