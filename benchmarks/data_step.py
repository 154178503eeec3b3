"""A trial's data step at full size: loading its task's splits and building its program (rag and agentic index
their corpus with BM25), as a Ray worker does it, with phase 1's sizes (n_labeled 200, n_val 50, n_eval 50).

For each task, `--trials` trials run one after another in one process (a reused Ray worker), and the whole again
in a second process (another worker on the same node): the first trial of the first process is the node's first
(it also pays `datasets`' one-time parquet → Arrow conversion, unless `--warm`); the others show what a later
trial pays. Reports wall seconds per trial and the process's peak RSS.

    python benchmarks/hub_mirror.py /tmp/full --full                 # the data (once)
    python benchmarks/data_step.py /tmp/full --tasks qa rag --record # append to BENCHMARKS.md

`--jsonl` first writes the same data as `<dir>/<dataset>/<split>.jsonl` (the layout every version of `arb`
reads), so the same measurement can be taken on an older checkout: `--root /path/to/old/checkout`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WORKER = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from trainables.tasks import get_task
task, data, trials = get_task(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import dspy, litellm  # what a trial process has imported anyway: its memory is not the data step's
if sys.argv[5] == "1":
    import datasets  # what `arb`'s Ray workers preload (grid.session.PRELOAD)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = []
for i in range(trials):
    t0 = time.perf_counter()
    splits = task.load(data, seed=i, n_labeled=200, n_val=50, n_eval=50)
    t1 = time.perf_counter()
    task.program(splits)
    t2 = time.perf_counter()
    out.append({"load_s": t1 - t0, "program_s": t2 - t1, "corpus": len(splits.corpus),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mb": base})
print(json.dumps(out))
"""


def worker(root: Path, task: str, data: str, trials: int, env: dict[str, str], preload: bool) -> list[dict[str, float]]:
    """One fresh process (a Ray worker) running `trials` trials' data steps of `task`; their figures."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(root), task, data, str(trials), str(int(preload))],
        capture_output=True, text=True, check=True, env=env, timeout=3600,
    )  # fmt: skip
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def as_jsonl(mirror: Path, dest: Path) -> Path:
    """The mirror's splits written in the samples' layout (`<dest>/<sample dir>/<split>.jsonl`)."""
    sys.path.insert(0, str(ROOT))
    from trainables.tasks import TASKS

    for task in TASKS.values():
        for data in task.data:
            for split in data.splits_used:
                out = dest / data.sample_dir / f"{split}.jsonl"
                if not out.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    data.open_split(str(mirror), split).to_json(str(out), lines=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a data directory (hub_mirror.py's output)")
    parser.add_argument("--tasks", nargs="+", default=["qa", "rag"])
    parser.add_argument("--trials", type=int, default=3, help="trials per process")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code is measured")
    parser.add_argument("--jsonl", type=Path, help="convert to JSONL in this directory and measure that")
    parser.add_argument("--warm", action="store_true", help="keep the datasets cache of an earlier run")
    parser.add_argument("--record", action="store_true", help="append the result to BENCHMARKS.md")
    parser.add_argument("--label", default="", help="what is measured (e.g. 'before: commit 2117565')")
    parser.add_argument("--preload", action="store_true", help="import `datasets` first, as arb's workers do")
    args = parser.parse_args()

    data = as_jsonl(args.data, args.jsonl) if args.jsonl else args.data
    env = dict(os.environ)
    cache = Path(env.get("HF_DATASETS_CACHE") or tempfile.mkdtemp(prefix="arb-hf-cache-"))
    env["HF_DATASETS_CACHE"] = str(cache)
    env.setdefault("ARB_HOME", tempfile.mkdtemp(prefix="arb-home-"))  # its own node cache (BM25 indexes)
    if not args.warm:
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    rows = []
    for task in args.tasks:
        first = worker(args.root, task, str(data), args.trials, env, args.preload)
        second = worker(args.root, task, str(data), args.trials, env, args.preload)
        for proc, figures in (("first", first), ("second", second)):
            for i, f in enumerate(figures):
                rows.append(
                    f"| {task} | {proc} process, trial {i + 1} | {f['load_s']:.2f} | {f['program_s']:.2f} | "
                    f"{f['corpus']} | {f['rss_mb']:.0f} ({f['rss_mb'] - f['base_mb']:+.0f}) |"
                )
    lines = [
        "| task | trial | load (s) | program (s) | corpus passages | peak RSS so far, MB (above the imports) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import record

        head = record.heading()
        how = f"Code: {args.root}{' (' + args.label + ')' if args.label else ''}; data: {data}."
        record.append("Data step at full size (benchmarks/data_step.py)", [*head, how, "", *lines])


if __name__ == "__main__":
    main()
