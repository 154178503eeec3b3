"""What phase 1 costs a user: wall time, GPU-hours and dollars on one 8-GPU H100 node, simulated, for today's
configuration, with requests in flight tuned, and with vLLM in place of Ollama; every parameter swept ×½ and ×2.

The calls are the real ones: a phase-1 MIPROv2 trial (auto=light, n_labeled 200, n_val 50, n_eval 50, 5 demos,
teacher = an API model) is run through `execute_trial` against the stub API at 0 s per call on math
(`--measure`, benchmarks/bench_data.py's data), and its metered calls by stage and role are the call structure of
every trial (agentic's ReAct makes `LM_CALLS_PER_PROGRAM_CALL` LM calls per program call). Prompt tokens per
call are the measured medians of benchmarks/prompt_sizes.py on full-size data (BENCHMARKS.md, "Prompt sizes"):
k = 0 demos for the baseline, k = 5 while optimizing and for the optimized program.

Service times depend on the requests in flight on an engine (fluid model, `Engine.service_s`): decode throughput
interpolated (log-log) between the public measurements in `CURVES`, each request's decode share = T(c) / c tokens/s,
plus its prefill at `prefill_tok_s` (vLLM's prefix caching skips the shared demo prefix, `prefix_share` of the
prompt). Requests over an engine's limit (Ollama's OLLAMA_NUM_PARALLEL, vLLM's --max-num-seqs) wait. API calls
(students and the teacher) take `api_call_s` / `teacher_call_s` each, at any concurrency. Each local model gets two
of the node's GPUs (an engine on each); the node is billed for the grid's whole wall time (8 GPUs).

Configurations:
  today     Ollama (4 slots per engine, a trial 1 request in flight, at most 4 trials per engine), API trials and
            the teacher 1 in flight: the code at 042695f.
  in-flight Ollama, a trial gets its engine's free slots (4 / trials there), API trials and teacher 8.
  vllm      vLLM (--max-num-seqs 64), a local trial 16 in flight, API trials and teacher 8.

Run:  .venv/bin/python benchmarks/grid_cost.py --measure --record   (measures the calls, ~2 min; then simulates)
      .venv/bin/python benchmarks/grid_cost.py --record    (simulates from benchmarks/results/phase1_calls.json)
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import record  # noqa: E402

from grid.spec import expand, load_grid  # noqa: E402
from trainables.registry import load_registry  # noqa: E402

CALLS_FILE = ROOT / "benchmarks" / "results" / "phase1_calls.json"

CURVES = {
    # aggregate decode tokens/s of a 7-8B model on one H100 by requests in flight. vLLM, Llama-3.1-8B: 122 / 580 /
    # 1,384 at 1 / 4 / 16, ~5,300 at saturation (256); Ollama: 41 at 1, 155 at 4 (its aggregate range, A100/H100,
    # 7-8B). Both as quoted in issue 42 from Red Hat (2025-08) and SitePoint (2026); not re-measured here.
    "vllm": {1: 122.0, 4: 580.0, 16: 1384.0, 256: 5300.0},
    "ollama": {1: 41.0, 4: 155.0},
}
PROMPT_TOKENS = {  # median prompt tokens per call, k = 0 and 5 demos (BENCHMARKS.md, prompt_sizes.py, /tmp/full)
    "agentic": (461, 636), "analysis": (322, 998), "classification": (1488, 1707), "code": (188, 583),
    "extraction": (318, 956), "math": (235, 841), "qa": (188, 575), "rag": (580, 2768), "synthesis": (540, 3054),
}  # fmt: skip
LM_CALLS_PER_PROGRAM_CALL = {"agentic": 4.0}
"""ReAct's steps per example (issue 42: ~1,150 program calls × ~4 LM calls); every other program makes one."""


@dataclass(frozen=True)
class Params:
    completion_tokens: float = 150.0
    """Tokens a call writes (a chain-of-thought answer); the sweep covers 75-300."""
    prefill_tok_s: float = 8000.0
    """Prompt tokens per second an engine reads per request (an 8B model on an H100)."""
    prefix_share: float = 1 / 3
    """Share of a prompt that is a demo prefix other requests already sent (vLLM's prefix cache skips it)."""
    api_call_s: float = 1.8
    """Seconds per API student call (150 tokens at ~100 tok/s plus the round trip)."""
    teacher_call_s: float = 3.0
    """Seconds per teacher call (instruction proposals and bootstraps write more)."""
    gpu_hour_usd: float = 3.0
    """USD per H100-hour, on demand."""
    ollama_slots: int = 4
    vllm_max_seqs: int = 64


@dataclass(frozen=True)
class Setup:
    name: str
    engine: str
    local_in_flight: int
    api_in_flight: int
    per_engine: int
    """Trials an engine runs at once."""
    lend: bool = False
    """A trial takes its engine's free slots (the driver's lending)."""


SETUPS = [
    Setup("today", "ollama", 1, 1, 4),
    Setup("in-flight", "ollama", 4, 8, 4, lend=True),
    Setup("vllm", "vllm", 16, 8, 4),
]


def throughput(engine: str, c: float) -> float:
    """Aggregate decode tokens/s at `c` requests in flight (log-log between the measured points, flat beyond)."""
    points = sorted(CURVES[engine].items())
    xs = [math.log(x) for x, _ in points]
    x = math.log(max(1.0, min(c, points[-1][0])))
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(points) - 2)
    (x0, y0), (x1, y1) = (xs[i], math.log(points[i][1])), (xs[i + 1], math.log(points[i + 1][1]))
    return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


@dataclass
class Work:
    """What a trial still has to do, in order: (kind, calls, prompt tokens per call); kind gpu | api | teacher."""

    trial: str
    steps: list[tuple[str, float, float]]
    engine: int | None
    """The engine that serves its student (None: an API student)."""
    api_usd: float = 0.0


@dataclass
class Sim:
    setup: Setup
    params: Params
    works: list[Work]
    clock: float = 0.0
    running: list[Work] = field(default_factory=list)

    def limit(self) -> int:
        return self.params.ollama_slots if self.setup.engine == "ollama" else self.params.vllm_max_seqs

    def wants(self, w: Work, on_engine: int) -> float:
        kind, calls, _ = w.steps[0]
        if kind != "gpu":
            return min(calls, float(self.setup.api_in_flight))
        if self.setup.lend:
            return max(1.0, self.limit() / max(on_engine, 1))
        return min(calls, float(self.setup.local_in_flight))

    def rates(self) -> dict[int, float]:
        """Calls per second of each running trial's current step."""
        out: dict[int, float] = {}
        by_engine: dict[int, list[Work]] = {}
        for w in self.running:
            if w.steps[0][0] == "gpu":
                assert w.engine is not None
                by_engine.setdefault(w.engine, []).append(w)
        for w in self.running:
            kind, _, _ = w.steps[0]
            if kind in ("api", "teacher"):
                each = self.params.api_call_s if kind == "api" else self.params.teacher_call_s
                out[id(w)] = self.wants(w, 1) / each
        for group in by_engine.values():
            asks = [self.wants(w, len(group)) for w in group]
            c = min(sum(asks), float(self.limit()))
            per_request_tok_s = throughput(self.setup.engine, c) / c
            for w, ask in zip(group, asks, strict=True):
                prompt = w.steps[0][2]
                if self.setup.engine == "vllm":
                    prompt *= 1 - self.params.prefix_share
                service = prompt / self.params.prefill_tok_s + self.params.completion_tokens / per_request_tok_s
                out[id(w)] = c / service * ask / sum(asks)
        return out

    def run(self) -> float:
        waiting = list(self.works)
        while waiting or self.running:
            for w in list(waiting):  # start what the engines (or the API) can take
                on = sum(1 for r in self.running if r.engine == w.engine)
                if w.engine is None or on < self.setup.per_engine:
                    self.running.append(w)
                    waiting.remove(w)
            rates = self.rates()
            dt = min(w.steps[0][1] / rates[id(w)] for w in self.running)
            for w in self.running:
                kind, calls, prompt = w.steps[0]
                served = rates[id(w)] * dt
                w.steps[0] = (kind, calls - served, prompt)
            self.clock += dt
            for w in list(self.running):
                if w.steps[0][1] <= 1e-9:
                    w.steps.pop(0)
                    if not w.steps:
                        self.running.remove(w)
        return self.clock


def plan(calls: dict[str, float], params: Params) -> list[Work]:
    """Phase 1's trials as work: each trial's calls by stage (measured on math, scaled per task by LM calls per
    program call), its student on an engine (two per local model) or the API; API dollars from the registry."""
    spec = load_grid(str(ROOT / "grid" / "phases" / "phase1.yaml"))
    registry = load_registry()
    teacher = registry.get(spec.teacher or "gpt-4o")
    local = sorted({t.model for t in expand(spec, registry) if not registry.get(t.model).provider_spec.api})
    works = []
    for i, trial in enumerate(expand(spec, registry)):
        entry = registry.get(trial.model)
        per = LM_CALLS_PER_PROGRAM_CALL.get(trial.task, 1.0)
        k0, k5 = PROMPT_TOKENS[trial.task]
        kind = "api" if entry.provider_spec.api else "gpu"
        steps = [(kind, calls["baseline"] * per, k0), ("teacher", calls["teacher"] * per, k5),
                 (kind, calls["search"] * per, k5), (kind, calls["optimized"] * per, k5)]  # fmt: skip
        engine = None if kind == "api" else 2 * local.index(trial.model) + i % 2
        usd = teacher.cost_usd(calls["teacher"] * per * k5, calls["teacher"] * per * params.completion_tokens * 2)
        if kind == "api":
            student_calls = (calls["baseline"] * k0 + (calls["search"] + calls["optimized"]) * k5) * per
            n = (calls["baseline"] + calls["search"] + calls["optimized"]) * per
            usd += entry.cost_usd(student_calls, n * params.completion_tokens)
        works.append(Work(trial.run_name, steps, engine, api_usd=usd))
    return works


def simulate(setup: Setup, params: Params, calls: dict[str, float]) -> dict[str, float]:
    works = plan(calls, params)
    wall_s = Sim(setup, params, works).run()
    gpu_hours = 8 * wall_s / 3600
    api_usd = sum(w.api_usd for w in works)
    return {"wall_h": wall_s / 3600, "gpu_hours": gpu_hours, "usd": gpu_hours * params.gpu_hour_usd + api_usd,
            "api_usd": api_usd}  # fmt: skip


def measure() -> dict[str, float]:
    """One phase-1 MIPROv2 trial on math, run for real against the stub API at 0 s per call: its calls by stage."""
    import bench_data
    from stub_server import StubServer, table_responder

    from grid.spec import GridSpec
    from trainables.record import tracking
    from trainables.tasks import math as math_task
    from trainables.trial import execute_trial

    with tempfile.TemporaryDirectory(prefix="arb-cost-") as tmp:
        data = bench_data.generate(Path(tmp) / "data", 400)
        splits = math_task.load(str(data), seed=0, n_labeled=200, n_val=50, n_eval=50)
        # right on about 70% of questions, as the study's 7B students are on GSM8K-like items
        answers = {ex.question: ex.answer for j, ex in enumerate(splits.train + splits.val + splits.test) if j % 10 < 7}
        spec = GridSpec(name="cost", phase="1", models=["gpt-4o"], tasks=["math"], optimizer="mipro",
                        teacher="gpt-4o", demos=[5], n_labeled=[200], n_val=50, n_eval=50, data=str(data),
                        optimizer_params={"auto": "light"}, lm_cache=False)  # fmt: skip
        [trial] = expand(spec, load_registry())
        uri = f"sqlite:///{tmp}/mlflow.db"
        with StubServer(["gpt-4o"], table_responder(answers)) as stub:
            import os

            os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key-000")
            endpoints = {"gpt-4o": stub.url + "/v1"}
            runtime: dict[str, Any] = {"tracking_uri": uri, "experiment_id": tracking.ensure_experiment(uri, "cost"),
                                       "endpoints": endpoints}  # fmt: skip
            m = execute_trial({"trial": trial.model_dump(), "runtime": runtime})
    evaluation = m["eval_lm_calls"] / 2
    return {"baseline": evaluation, "optimized": evaluation, "teacher": m["teacher_lm_calls"],
            "search": m["optimize_lm_calls"] - m["teacher_lm_calls"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="measure the call structure first (~2 min)")
    parser.add_argument("--record", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args()
    if args.measure or not CALLS_FILE.exists():
        CALLS_FILE.parent.mkdir(parents=True, exist_ok=True)
        CALLS_FILE.write_text(json.dumps(measure(), indent=1))
    calls = json.loads(CALLS_FILE.read_text())
    base = Params()
    results = {s.name: simulate(s, base, calls) for s in SETUPS}
    today, tuned, vllm = results["today"], results["in-flight"], results["vllm"]
    lines = [*record.heading(),
             f"Calls per trial (measured, math, MIPROv2 auto=light at 200/50/50, 5 demos): "
             f"{calls['baseline']:.0f} baseline, {calls['teacher']:.0f} teacher, {calls['search']:.0f} search, "
             f"{calls['optimized']:.0f} optimized; agentic × {LM_CALLS_PER_PROGRAM_CALL['agentic']:g}.",
             "",
             f"**phase 1, one 8-GPU H100 node (simulated): wall {today['wall_h']:.1f} h → {vllm['wall_h']:.1f} h, "
             f"GPU-hours {today['gpu_hours']:.1f} → {vllm['gpu_hours']:.1f}, cost ${today['usd']:.0f} → "
             f"${vllm['usd']:.0f}** (today → vLLM with requests in flight).",
             "",
             "| configuration | wall h | GPU-hours | $ GPU | $ API | $ total |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        gpu_usd = r["gpu_hours"] * base.gpu_hour_usd
        lines.append(f"| {name} | {r['wall_h']:.2f} | {r['gpu_hours']:.1f} | {gpu_usd:.0f} | {r['api_usd']:.0f} | "
                     f"{r['usd']:.0f} |")  # fmt: skip
    lines += ["", "Each parameter ×½ and ×2 (the others at their values): wall h today / vLLM and the ratio.", "",
              "| parameter | value | ×½: today / vllm (ratio) | ×2: today / vllm (ratio) |",
              "|---|---|---|---|"]  # fmt: skip
    for name, value in vars(base).items():
        cells = []
        for factor in (0.5, 2.0):
            changed = type(value)(value * factor) if name != "prefix_share" else min(value * factor, 0.9)
            p = replace(base, **{name: max(changed, 1) if isinstance(value, int) else changed})
            a, b = simulate(SETUPS[0], p, calls)["wall_h"], simulate(SETUPS[2], p, calls)["wall_h"]
            cells.append(f"{a:.2f} / {b:.2f} ({a / b:.1f}×)")
        lines.append(f"| {name} | {value:g} | {cells[0]} | {cells[1]} |")
    lines.append(f"\nin-flight alone (Ollama): wall {tuned['wall_h']:.2f} h ({today['wall_h'] / tuned['wall_h']:.1f}× "
                 "lower than today).")  # fmt: skip
    if args.record:
        record.append("What a grid costs, simulated (benchmarks/grid_cost.py)", lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
