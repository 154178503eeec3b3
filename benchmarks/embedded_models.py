"""The embedded models on this machine: speed, DSPy format compliance and unoptimized scores on the sample data,
with DSPy's text format (ChatAdapter) and with structured outputs (JSON schema enforced by llama.cpp's grammar).

For each model, one llama.cpp server (as `arb run` starts it, with its speed measured at start); for each task, the
baseline program on the sample test split, once per output mode. Parse failures are examples whose answer DSPy
could not read (after ChatAdapter's own JSON retry); calls per example above 1 show those retries.

Run:  .venv/bin/python benchmarks/embedded_models.py [--models qwen-coder-0.5b qwen-coder-1.5b] [--tasks math qa]
      [--n-eval 6]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import record  # noqa: E402

from grid.embedded import serve_embedded  # noqa: E402
from trainables.registry import load_registry  # noqa: E402
from trainables.tasks import TASKS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["qwen-coder-0.5b", "qwen-coder-1.5b"])
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS))
    parser.add_argument("--n-eval", type=int, default=6)
    args = parser.parse_args()

    import dspy

    from trainables.evaluate import evaluate
    from trainables.lm import adapters
    from trainables.lm import cache as lm_cache
    from trainables.lm.client import Endpoint, build_lm, new_meter

    registry = load_registry()
    tmp = Path(tempfile.mkdtemp(prefix="arb-embedded-bench-"))
    os.environ["ARB_HOME"] = str(tmp / "home")
    lm_cache.install(None)  # every call goes to the model
    speeds = []
    rows = []
    for model in args.models:
        entry = registry.get(model)
        with serve_embedded([model], registry, tmp / "logs") as servers:
            speed = servers.speeds[model]
            speeds.append(f"| {model} | {speed.prompt_tok_s:.0f} | {speed.generate_tok_s:.1f} | "
                          f"{servers.timeouts[model]:.0f} |")  # fmt: skip
            for task_name in args.tasks:
                task = TASKS[task_name]
                splits = task.load("sample", 0, 0, 1, args.n_eval)
                for structured in (False, True):
                    meter = new_meter(f"{model}-{task_name}-{structured}")
                    at = Endpoint(servers.endpoints[model], timeout_s=servers.timeouts[model])
                    lm = build_lm(entry, meter=meter.name, role="student", at=at)
                    start = time.perf_counter()
                    with dspy.context(adapter=adapters.adapter(structured)):
                        result = evaluate(task.program(splits), splits.test, task, lm=lm,
                                          condition="baseline")  # fmt: skip
                    took = time.perf_counter() - start
                    usage = meter.total()
                    n = len(result.records)
                    mode = "json schema" if structured else "text (ChatAdapter)"
                    line = (f"| {model} | {task_name} | {mode} | {n} | {result.score:.1f} | "
                            f"{result.parse_failures}/{n} | {usage.calls / n:.2f} | {took / n:.1f} | "
                            f"{usage.completion_tokens / max(usage.calls, 1):.0f} |")  # fmt: skip
                    print(line, flush=True)
                    rows.append(line)
    lines = [
        *record.heading(),
        "Speed measured by `arb`'s server start (a ~600-token prompt, then 32 generated tokens); the per-call",
        "timeout follows from it and the registry's `max_tokens` and `context`.",
        "",
        "| model | prompt tok/s | generated tok/s | per-call timeout s |",
        "|---|---|---|---|",
        *speeds,
        "",
        "Unoptimized program on the sample test split (temperature 0, the GGUF's own chat template):",
        "",
        "| model | task | output format | n | score % | parse failures | LM calls / example | s / example "
        "| completion tokens / call |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    record.append("Embedded models: speed, format compliance, scores", lines)


if __name__ == "__main__":
    main()
