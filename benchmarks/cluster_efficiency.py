"""Scheduling efficiency, model loads, resume cost and speed-up over a sequential loop, on a simulated GPU cluster.

A local Ray cluster (a head and N worker nodes on 127.0.0.1), each worker with its own simulated Ollama
(tests/stub_server.py: parallel slots, a fixed generation time per call, a load time, models held in memory), all
logging to an MLflow server on PostgreSQL. The grid: M Ollama models × the nine tasks, baseline evaluation on the
sample data. Then the same work as a plain sequential loop in one process (DSPy, the same programs and data, one
simulated node), and a re-run of the finished grid.

  ideal time  = (simulated generation time of every call + the minimum loads × load time) / total slots
  efficiency  = ideal time / measured wall time of `arb run` (driver start to exit)

Run:  .venv/bin/python benchmarks/cluster_efficiency.py [--nodes 3 --slots 2 --models 6 --call-seconds 1.0 ...]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import record  # noqa: E402
from servers import RAY_ENV, free_port, mlflow_on_postgres, ray_node, stop, wait_for_nodes  # noqa: E402
from stub_server import StubServer, table_responder  # noqa: E402

from trainables.tasks import TASKS  # noqa: E402

MODELS = ["llama3.2", "mistral", "phi4", "qwen2.5:7b", "qwen3:4b", "deepseek-r1:7b"]


def _grid(path: Path, models: list[str], n_eval: int) -> None:
    path.write_text(
        f"name: bench\nphase: bench\nmodels: [{', '.join(repr(m) for m in models)}]\n"
        f"tasks: [{', '.join(TASKS)}]\noptimizer: none\ndemos: [0]\nn_labeled: [0]\nn_val: 1\nn_eval: {n_eval}\n"
        "data: sample\nlm_cache: false\n"
    )


def _arb(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grid.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"arb {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - start, done.stdout


def sequential(models: list[str], n_eval: int, sim: dict[str, float]) -> tuple[float, int, int]:
    """The same evaluations as a plain loop in this process, against one simulated node: (seconds, calls, loads)."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    with StubServer(models, table_responder({}), **sim) as node:
        start = time.monotonic()
        for model in models:
            # Ollama's native /api/chat through LiteLLM, as the trials call it
            lm = dspy.LM(f"ollama_chat/{model}", api_base=node.url, api_key="local", temperature=0.0, cache=False,
                         engine="litellm")  # fmt: skip
            for task in TASKS.values():
                splits = task.load("sample", 0, 0, 1, n_eval)
                program = task.program(splits)
                for example in splits.test:
                    # a format failure scores 0, as in a trial; anything else (the server) stops the benchmark
                    with dspy.context(lm=lm), contextlib.suppress(AdapterParseError, ValueError, RecursionError):
                        task.metric(example, program(**example.inputs()))
        return time.monotonic() - start, node.state.calls.total(), sum(node.state.loads.values())


def _seconds_in_runs(uri: str) -> float:
    """Total time trials spent inside their MLflow runs (from the first write to the last)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
    return sum((r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2, help="Ollama slots per node")
    parser.add_argument("--models", type=int, default=6, choices=range(1, len(MODELS) + 1))
    parser.add_argument("--n-eval", type=int, default=6, help="test examples per trial (the sample data has 6-10)")
    parser.add_argument("--call-seconds", type=float, default=1.0, help="simulated generation time per call")
    parser.add_argument("--load-seconds", type=float, default=5.0, help="simulated model load time")
    parser.add_argument("--max-loaded", type=int, default=1, help="models a node holds in memory at once")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    # SIGTERM (kill, timeout) unwinds like Ctrl-C, so the cluster, MLflow and PostgreSQL are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    models = MODELS[: args.models]
    sim: dict[str, Any] = {
        "slots": args.slots, "call_seconds": args.call_seconds, "load_seconds": args.load_seconds,
        "max_loaded": args.max_loaded,
    }  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="arb-bench-"))
    grid = tmp / "bench.yaml"
    _grid(grid, models, args.n_eval)
    with mlflow_on_postgres(tmp) as mlflow, contextlib.ExitStack() as stack:
        sims = [stack.enter_context(StubServer(models, table_responder({}), **sim)) for _ in range(args.nodes)]
        port = free_port()
        address = f"127.0.0.1:{port}"
        nodes = [ray_node(["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"], tmp / "head.log")]
        try:
            wait_for_nodes(address, 1)
            for i, node in enumerate(sims):
                labels = f"arb-ollama-port={node.port},arb-ollama-max-models={args.max_loaded}"
                resources = f'--resources={{"ollama_slots": {args.slots}}}'
                worker = [f"--address={address}", f"--num-cpus={args.slots}", resources, f"--labels={labels}"]
                nodes.append(ray_node(worker, tmp / f"worker{i}.log"))
                wait_for_nodes(address, 2 + i)
            env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
            env.update({**RAY_ENV, "RAY_ADDRESS": address, "ARB_HOME": str(tmp / "home")})
            print(f"cluster up: {args.nodes} nodes × {args.slots} slots; running {len(models) * 9} trials", flush=True)
            wall, _ = _arb(["run", str(grid), "--tracking-uri", mlflow.uri], env)
            calls = sum(s.state.calls.total() for s in sims)
            service = sum(s.state.busy_seconds for s in sims)
            loads = sum(sum(s.state.loads.values()) for s in sims)
            per_node = [dict(s.state.loads) for s in sims]
            in_runs = _seconds_in_runs(mlflow.uri)
            resume_wall, _ = _arb(["run", str(grid), "--tracking-uri", mlflow.uri], env)
            resume_calls = sum(s.state.calls.total() for s in sims) - calls
        finally:
            for node in reversed(nodes):
                stop(node)
    min_loads = max(len(models), args.nodes)
    slots = args.nodes * args.slots
    ideal = (service + min_loads * args.load_seconds) / slots
    seq = None if args.skip_sequential else sequential(models, args.n_eval, sim)
    _report(args, models, wall, ideal, calls, loads, min_loads, per_node, resume_wall, resume_calls, seq, in_runs)


def _report(
    args: argparse.Namespace,
    models: list[str],
    wall: float,
    ideal: float,
    calls: int,
    loads: int,
    min_loads: int,
    per_node: list[dict[str, int]],
    resume_wall: float,
    resume_calls: int,
    seq: tuple[float, int, int] | None,
    in_runs: float,
) -> None:
    lines = [
        *record.heading(),
        f"Grid: {len(models)} models × 9 tasks = {len(models) * 9} trials, n_eval {args.n_eval}; "
        f"{args.nodes} nodes × {args.slots} slots; {args.call_seconds} s per call, {args.load_seconds} s per load, "
        f"{args.max_loaded} model(s) in memory per node.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| LM calls served | {calls} |",
        f"| ideal time (service + minimum loads, over {args.nodes * args.slots} slots) | {ideal:.1f} s |",
        f"| wall time of `arb run` | {wall:.1f} s |",
        f"| **efficiency** (ideal / wall) | **{ideal / wall:.2f}** |",
        f"| slot time inside trials' MLflow runs / wall × slots | {in_runs / (wall * args.nodes * args.slots):.2f} |",
        f"| model loads (minimum {min_loads}) | {loads} — per node: {per_node} |",
        f"| re-run of the finished grid | {resume_wall:.1f} s, {resume_calls} LM calls |",
    ]
    if seq is not None:
        seconds, seq_calls, seq_loads = seq
        lines.append(
            f"| sequential loop, one process, one node | {seconds:.1f} s ({seq_calls} calls, {seq_loads} loads) |"
        )
        lines.append(f"| **speed-up over the sequential loop** | **{seconds / wall:.1f}×** |")
    record.append("Cluster efficiency (benchmarks/cluster_efficiency.py)", lines)


if __name__ == "__main__":
    main()
