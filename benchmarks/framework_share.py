"""The framework's share of a real trial's wall time: everything that is not the model server answering.

One trial (an embedded llama.cpp model, baseline evaluation on the sample data) runs in this process, as a Ray
worker runs it (`execute_trial`: MLflow run, data, DSPy program, evaluation, artifacts). Its LM calls go through
a timing proxy on 127.0.0.1 in front of the llama.cpp server, which adds up how long the server took to answer.

  framework share = 1 - (time inside the model server) / (trial wall time)

Not included: starting the Ray worker process (paid once per worker: trials reuse warm workers) and starting the
llama.cpp server (once per sweep).

Run:  .venv/bin/python benchmarks/framework_share.py [--model smollm2 --task math --n-eval 6 --repeat 3]
Appends the result, with the machine, the date and this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import record  # noqa: E402

from grid.embedded import serve_embedded  # noqa: E402
from grid.spec import GridSpec, expand  # noqa: E402
from trainables.record import tracking  # noqa: E402
from trainables.registry import load_registry  # noqa: E402
from trainables.trial import execute_trial  # noqa: E402


class TimingProxy(ThreadingHTTPServer):
    """Forwards POSTs to `upstream` and adds up the seconds each took."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seconds = 0.0
        self.calls = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: TimingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        start = time.perf_counter()
        answer = httpx.post(self.server.upstream + self.path, content=body, headers=headers, timeout=600)
        took = time.perf_counter() - start
        with self.server.lock:
            self.server.seconds += took
            self.server.calls += 1
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="math")
    parser.add_argument("--n-eval", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    registry = load_registry()
    tmp = Path(tempfile.mkdtemp(prefix="arb-share-"))
    os.environ["ARB_HOME"] = str(tmp / "home")
    spec = GridSpec(
        name="share", models=[args.model], tasks=[args.task], optimizer="none", demos=[0], n_labeled=[0],
        n_val=1, n_eval=args.n_eval, data="sample", lm_cache=False,
    )  # fmt: skip
    trial = expand(spec, registry)[0]
    rows = []
    with serve_embedded([args.model], registry, tmp / "logs") as servers:
        proxy = TimingProxy(servers.endpoints[args.model])
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        for i in range(args.repeat):
            uri = f"sqlite:///{tmp / f'mlflow-{i}.db'}"  # a fresh store: nothing is reused
            config = {
                "trial": trial.model_dump(),
                "runtime": {"tracking_uri": uri, "experiment_id": tracking.ensure_experiment(uri, spec.name),
                            "endpoints": {args.model: proxy.url}},
            }  # fmt: skip
            before_s, before_calls = proxy.seconds, proxy.calls
            start = time.perf_counter()
            execute_trial(config)
            wall = time.perf_counter() - start
            inside = proxy.seconds - before_s
            rows.append((wall, inside, proxy.calls - before_calls))
            print(f"trial {i + 1}: {wall:.1f} s wall, {inside:.1f} s in the model server", flush=True)
        proxy.shutdown()
    shares = [1 - inside / wall for wall, inside, _ in rows]
    lines = [
        *record.heading(),
        f"Trial: {args.model} · {args.task} · baseline · n_eval {args.n_eval}, llama.cpp on the same cores.",
        "",
        "| run | trial wall s | inside the model server s | LM calls | framework share |",
        "|---|---|---|---|---|",
        *[f"| {i + 1} | {w:.1f} | {s:.1f} | {c} | {1 - s / w:.1%} |" for i, (w, s, c) in enumerate(rows)],
        "",
        f"Median framework share: **{statistics.median(shares):.1%}** (the first run also pays one-time imports).",
    ]
    record.append("Framework share of a real trial (benchmarks/framework_share.py)", lines)


if __name__ == "__main__":
    main()
