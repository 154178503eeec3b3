"""Scheduling efficiency, per-trial cost breakdown, model loads, resume cost and speed-up over a sequential loop,
on a simulated GPU cluster.

A local Ray cluster (a head and N worker nodes on 127.0.0.1), each worker with its own simulated Ollama
(tests/stub_server.py: parallel slots, a fixed generation time per call, a load time, models held in memory), all
logging to an MLflow server on PostgreSQL. The grid: M Ollama models × the nine tasks, baseline evaluation of
n_eval examples (above the sample files' 6, on generated data: benchmarks/bench_data.py). Then the same work as a
plain sequential loop in one process (DSPy, the same programs and data, one simulated node), and a re-run of the
finished grid.

  ideal time  = (simulated generation time of every call + the minimum loads × load time) / total slots
  efficiency  = ideal time / measured wall time of `arb run` (driver start to exit)

Presets: `--preset old` (2 s calls, n_eval 6: the first published configuration), `--preset realistic` (4 s
calls, a 7B model writing 150-250 tokens; n_eval 20) and `--preset harness` (0.4 s calls and compile on:
BootstrapFewShot, 2 demos from 6 labeled examples, before evaluation; what remains of the wall time beyond the
simulated calls is the harness's own cost: workers, DSPy, MLflow, scheduling). The fixed call time does not depend
on how many requests are in flight, so this measures the harness, not the GPU: `benchmarks/grid_cost.py` models
the GPU's throughput curve. The sequential loop can be run on the first K models only
(`--sequential-models K`) and scaled by M/K: every model does the same work on the simulated servers.

Run:  .venv/bin/python benchmarks/cluster_efficiency.py --preset realistic [--nodes 3 --slots 2 --models 6 ...]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md; writes the slot timeline PNG to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import bench_data  # noqa: E402
import record  # noqa: E402
from servers import RAY_ENV, free_port, mlflow_on_postgres, ray_node, stop, wait_for_nodes  # noqa: E402
from stub_server import StubServer, table_responder  # noqa: E402

from trainables.tasks import TASKS  # noqa: E402

MODELS = ["llama3.2", "mistral", "phi4", "qwen2.5:7b", "qwen3:4b", "deepseek-r1:7b"]
PRESETS: dict[str, dict[str, Any]] = {
    "old": {"call_seconds": 2.0, "n_eval": 6},
    "realistic": {"call_seconds": 4.0, "n_eval": 20},
    # the harness's own overhead: short calls, and each trial compiles (BootstrapFewShot) before it evaluates
    "harness": {"call_seconds": 0.4, "n_eval": 6, "optimizer": "bootstrap"},
}
SAMPLE_N_EVAL = 6
"""The shipped sample files have at least this many test examples per task."""
RESULTS = ROOT / "benchmarks" / "results"
PHASES = ["worker_start", "wait", "setup", "gate", "load", "eval", "optimize", "publish", "finish"]
PHASE_NAMES = {
    "worker_start": "worker process start + imports (first trial of a worker)",
    "wait": "handed out → started (queued behind a slot, actor hand-over)",
    "setup": "MLflow: find or create the run, params",
    "gate": "waiting for the node's model switch (placed early to keep its warm worker)",
    "load": "data, LMs, program",
    "eval": "evaluation (model service + DSPy/LiteLLM)",
    "optimize": "optimizer",
    "publish": "MLflow, in the trial's thread: datasets, logged model",
    "finish": "MLflow: the rest of the background writes (traces, table, prompt, artifacts), then the result",
}
_ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (/[^ ?"]*)')


def _grid(path: Path, models: list[str], n_eval: int, data: str, optimizer: str) -> None:
    # compile on: 2 bootstrapped demos from 6 labeled examples, scored on 3 (what the sample files hold)
    compile_ = "demos: [0]\nn_labeled: [0]\nn_val: 1" if optimizer == "none" else "demos: [2]\nn_labeled: [6]\nn_val: 3"
    path.write_text(
        f"name: bench\nphase: bench\nmodels: [{', '.join(repr(m) for m in models)}]\n"
        f"tasks: [{', '.join(TASKS)}]\noptimizer: {optimizer}\n{compile_}\nn_eval: {n_eval}\n"
        f"data: {data}\nlm_cache: false\n"
    )


def _arb(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Run `arb` to the end: its wall time, and when (seconds after its start) its progress first said what."""
    start = time.monotonic()
    marks: dict[str, float] = {}
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "grid.cli", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            for mark, prefix in MARKS.items():
                if mark not in marks and line.lstrip().startswith(prefix):
                    marks[mark] = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"arb {' '.join(args)} failed:\n{''.join(lines)[-3000:]}")
    return time.monotonic() - start, marks


MARKS = {"grid checked": "grid '", "Ray connected": "ray: connected", "first trial started": "▶ start",
         "first trial ended": "✔"}  # fmt: skip
"""Progress lines of `arb run`, by what their first appearance means."""


def sequential(models: list[str], n_eval: int, data: str, sim: dict[str, float]) -> tuple[float, int, int]:
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
                splits = task.load(data, 0, 0, 1, n_eval)
                program = task.program(splits)
                for example in splits.test:
                    # a format failure scores 0, as in a trial; anything else (the server) stops the benchmark
                    with dspy.context(lm=lm), contextlib.suppress(AdapterParseError, ValueError, RecursionError):
                        task.metric(example, program(**example.inputs()))
        return time.monotonic() - start, node.state.calls.total(), sum(node.state.loads.values())


@contextlib.contextmanager
def ray_cluster(tmp: Path, sims: list[StubServer], slots: int, max_models: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head and one worker node per simulated Ollama, on 127.0.0.1: (address, the environment for `arb`)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [ray_node(["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"], tmp / "head.log")]
    try:
        wait_for_nodes(address, 1)
        for i, node in enumerate(sims):
            labels = f"arb-ollama-port={node.port},arb-ollama-max-models={max_models}"
            resources = f'--resources={{"ollama_slots": {slots}}}'
            worker = [f"--address={address}", f"--num-cpus={slots}", resources, f"--labels={labels}"]
            nodes.append(ray_node(worker, tmp / f"worker{i}.log"))
            wait_for_nodes(address, 2 + i)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update({**RAY_ENV, "RAY_ADDRESS": address, "ARB_HOME": str(tmp / "home")})
        yield address, env
    finally:
        for node in reversed(nodes):
            stop(node)


def _tune_results(storage: Path) -> list[dict[str, Any]]:
    """The last result of every Tune trial of the grid (our metrics, `time_*`, and the config: node)."""
    out = []
    for path in storage.glob("*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines:
            out.append(json.loads(lines[-1]))
    return out


def _node_ports(address: str) -> dict[str, int]:
    """Ray node id → the port of the simulated Ollama it serves (its `arb-ollama-port` label)."""
    probe = (
        "import json, ray; ray.init(address=%r, log_to_driver=False); "
        "print(json.dumps({n['NodeID']: (n.get('Labels') or {}).get('arb-ollama-port') for n in ray.nodes()}))"
    )
    out = subprocess.run([sys.executable, "-c", probe % address], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **RAY_ENV})  # fmt: skip
    ports = json.loads(out.stdout.strip().splitlines()[-1])
    return {node: int(port) for node, port in ports.items() if port}


def _mlflow_requests(log: Path, since: float, until: float) -> Counter[str]:
    """Requests the MLflow server logged between two Unix times, by method and path (ids folded)."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        m = _ACCESS.search(line)
        if not m or len(line) < 19:
            continue
        try:
            at = time.mktime(time.strptime(line[:19], "%Y/%m/%d %H:%M:%S"))
        except ValueError:
            continue
        if since - 1 <= at <= until + 1:
            counts[f"{m.group(1)} {re.sub(r'/[0-9a-f]{32}|/tr-[0-9a-f]+|/m-[0-9a-f]+', '/…', m.group(2))}"] += 1
    return counts


def _timeline(
    path: Path, t0: float, t1: float, results: list[dict[str, Any]], ports: dict[str, int],
    sims: list[StubServer], slots: int, title: str,
) -> None:  # fmt: skip
    """PNG: per node, trials running and generations in flight over time, against the node's slots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, t1 - t0, 2000)
    fig, axes = plt.subplots(len(sims), 1, figsize=(11, 1.8 * len(sims) + 0.8), sharex=True, squeeze=False)
    for ax, sim in zip(axes[:, 0], sims, strict=True):
        served = sim.state.served
        calls = [sum(1 for a, b in served if a - t0 <= x < b - t0) for x in grid]
        mine = [r for r in results if ports.get(str((r.get("config") or {}).get("node"))) == sim.port]
        trials = [sum(1 for r in mine if r["started_at"] - t0 <= x < r["ended_at"] - t0) for x in grid]
        ax.fill_between(grid, calls, step="post", alpha=0.5, label="generations in flight")
        ax.step(grid, trials, where="post", color="black", linewidth=0.8, label="trials running")
        ax.axhline(slots, color="red", linestyle="--", linewidth=0.8, label="slots")
        ax.set_ylim(0, slots + 1.5)
        ax.set_ylabel(f"node :{sim.port}")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("seconds since `arb run` started")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="call time and n_eval of a named configuration")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2, help="Ollama slots per node")
    parser.add_argument("--models", type=int, default=6, choices=range(1, len(MODELS) + 1))
    parser.add_argument("--n-eval", type=int, help="test examples per trial (above 6: generated data)")
    parser.add_argument("--call-seconds", type=float, help="simulated generation time per call")
    parser.add_argument("--load-seconds", type=float, default=5.0, help="simulated model load time")
    parser.add_argument("--max-loaded", type=int, default=1, help="models a node holds in memory at once")
    parser.add_argument("--sequential-models", type=int, help="run the sequential loop on the first K models only")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--optimizer", choices=["none", "bootstrap"], help="compile before evaluating (default none)")
    args = parser.parse_args()
    preset = PRESETS.get(args.preset or "", {})
    args.optimizer = args.optimizer or preset.get("optimizer", "none")
    # the sequential loop evaluates only; with compile on there is nothing like it to compare with
    args.skip_sequential = args.skip_sequential or args.optimizer != "none"
    args.n_eval = args.n_eval or preset.get("n_eval", 6)
    args.call_seconds = args.call_seconds or preset.get("call_seconds", 2.0)
    # Worker processes import the trial's code before their first trial, as cluster.yaml's nodes do.
    os.environ.setdefault("RAY_preload_python_modules", "trainables.trial")
    # SIGTERM (kill, timeout) unwinds like Ctrl-C, so the cluster, MLflow and PostgreSQL are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    models = MODELS[: args.models]
    sim: dict[str, Any] = {
        "slots": args.slots, "call_seconds": args.call_seconds, "load_seconds": args.load_seconds,
        "max_loaded": args.max_loaded,
    }  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="arb-bench-"))
    data = "sample" if args.n_eval <= SAMPLE_N_EVAL else str(bench_data.generate(tmp / "data", args.n_eval + 10))
    grid = tmp / "bench.yaml"
    _grid(grid, models, args.n_eval, data, args.optimizer)
    with mlflow_on_postgres(tmp) as mlflow, contextlib.ExitStack() as stack:
        sims = [stack.enter_context(StubServer(models, table_responder({}), **sim)) for _ in range(args.nodes)]
        with ray_cluster(tmp, sims, args.slots, args.max_loaded) as (address, env):
            print(f"cluster up: {args.nodes} nodes × {args.slots} slots; running {len(models) * 9} trials", flush=True)
            t0 = time.time()
            wall, marks = _arb(["run", str(grid), "--tracking-uri", mlflow.uri], env)
            t1 = time.time()
            calls = sum(s.state.calls.total() for s in sims)
            service = sum(s.state.busy_seconds for s in sims)
            loads = sum(sum(s.state.loads.values()) for s in sims)
            per_node = [dict(s.state.loads) for s in sims]
            results = [r for r in _tune_results(tmp / "home" / "ray" / "bench") if not r.get("reused")]
            ports = _node_ports(address)
            requests = _mlflow_requests(mlflow.log, t0, t1)
            resume_wall, _ = _arb(["run", str(grid), "--tracking-uri", mlflow.uri], env)
            resume_calls = sum(s.state.calls.total() for s in sims) - calls
    min_loads = max(len(models), args.nodes)
    slots = args.nodes * args.slots
    ideal = (service + min_loads * args.load_seconds) / slots
    label = f"{args.preset or 'custom'}-{args.call_seconds:g}s-n{args.n_eval}-{args.optimizer}"
    png = RESULTS / f"cluster_timeline_{label}.png"
    title = (f"{len(models)} models × 9 tasks, {args.optimizer}, n_eval {args.n_eval}, {args.call_seconds:g} s/call, "
             f"{args.nodes} nodes × {args.slots} slots: efficiency {ideal / wall:.2f}")  # fmt: skip
    _timeline(png, t0, t1, results, ports, sims, args.slots, title)
    seq = None
    if not args.skip_sequential:
        k = min(args.sequential_models or len(models), len(models))
        seconds, seq_calls, seq_loads = sequential(models[:k], args.n_eval, data, sim)
        seq = (seconds, seq_calls, seq_loads, k)
    _report(args, models, (wall, ideal, calls, loads, min_loads, per_node), (resume_wall, resume_calls), seq,
            results, requests, png, marks)  # fmt: skip


def _breakdown(results: list[dict[str, Any]], wall: float, slots: int, calls: int, call_s: float) -> list[str]:
    """Mean seconds per trial by phase, and where the cluster's slot-seconds went."""
    n = len(results) or 1
    lines = ["", "Per trial (mean over the trials that ran; seconds):", "",
             "| phase | s / trial | share of slot time |", "|---|---|---|"]  # fmt: skip
    slot_time = wall * slots
    for phase in PHASES:
        total = sum(float(r.get(f"time_{phase}", 0.0)) for r in results)
        lines.append(f"| {PHASE_NAMES[phase]} | {total / n:.2f} | {total / slot_time:.1%} |")
    inside = sum(r["ended_at"] - r["started_at"] for r in results)
    named = sum(float(r.get(f"time_{p}", 0.0)) for r in results for p in PHASES if p not in ("worker_start", "wait"))
    lines.append(f"| rest of the trial (Tune report, MLflow run start/end) | {(inside - named) / n:.2f} | "
                 f"{(inside - named) / slot_time:.1%} |")  # fmt: skip
    cpu = sum(float(r.get("time_cpu", 0.0)) for r in results)
    lines.append(f"| CPU of the trial's process (all threads; inside the phases above) | {cpu / n:.2f} | – |")
    service = calls * call_s
    lines.append(f"| of which model service (simulated generation) | {service / n:.2f} | {service / slot_time:.1%} |")
    idle = slot_time - inside
    lines.append(f"| slot time outside any trial (start-up, tail, switches) | – | {idle / slot_time:.1%} |")
    return lines


def _report(
    args: argparse.Namespace, models: list[str], run: tuple[Any, ...], resume: tuple[float, int],
    seq: tuple[float, int, int, int] | None, results: list[dict[str, Any]], requests: Counter[str], png: Path,
    marks: dict[str, float],
) -> None:  # fmt: skip
    wall, ideal, calls, loads, min_loads, per_node = run
    resume_wall, resume_calls = resume
    slots = args.nodes * args.slots
    lines = [
        *record.heading(),
        f"Grid: {len(models)} models × 9 tasks = {len(models) * 9} trials, optimizer {args.optimizer}, "
        f"n_eval {args.n_eval}; "
        f"{args.nodes} nodes × {args.slots} slots; {args.call_seconds} s per call, {args.load_seconds} s per load, "
        f"{args.max_loaded} model(s) in memory per node. Timeline: `{png.relative_to(ROOT)}`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| LM calls served | {calls} |",
        f"| ideal time (service + minimum loads, over {slots} slots) | {ideal:.1f} s |",
        f"| wall time of `arb run` | {wall:.1f} s |",
        f"| **efficiency** (ideal / wall) | **{ideal / wall:.2f}** |",
        f"| model loads (minimum {min_loads}) | {loads} — per node: {per_node} |",
        f"| re-run of the finished grid | {resume_wall:.1f} s, {resume_calls} LM calls |",
    ]
    if seq is not None:
        seconds, seq_calls, seq_loads, k = seq
        scale = len(models) / k
        how = "" if k == len(models) else f" — measured on {k} of {len(models)} models ({seconds:.1f} s), × {scale:g}"
        lines.append(
            f"| sequential loop, one process, one node | {seconds * scale:.1f} s ({seq_calls} calls, {seq_loads} "
            f"loads{how}) |"
        )
        lines.append(f"| **speed-up over the sequential loop** | **{seconds * scale / wall:.1f}×** |")
    lines += _breakdown(results, wall, slots, calls, args.call_seconds)
    first = sorted(results, key=lambda r: r["started_at"])[:slots]
    boot = sum(r.get("time_worker_start", 0) for r in first) / max(len(first), 1)
    when = ", ".join(f"{m} {t:.1f}" for m, t in marks.items())
    lines += ["", f"Start-up, seconds after `arb run` started: {when}; the first {len(first)} trials spent "
              f"{boot:.1f} s on average starting their worker process."]  # fmt: skip
    total = sum(requests.values())
    top = ", ".join(f"{path} {n / max(len(results), 1):.1f}" for path, n in requests.most_common(8))
    lines += ["", f"MLflow requests during the sweep: {total} ({total / max(len(results), 1):.1f} per trial); "
              f"most frequent, per trial: {top}."]  # fmt: skip
    record.append("Cluster efficiency (benchmarks/cluster_efficiency.py)", lines)


if __name__ == "__main__":
    main()
