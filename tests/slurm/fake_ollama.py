"""`ollama` for the SLURM tests: `ollama serve | list | pull TAG` against the tests' stub (tests/stub_server.py),
which starts with no model, so a trial finds its model only if its node pulled it.

`serve` answers after FAKE_OLLAMA_CALL_S seconds per call (slow enough for a test to cut a sweep mid-run) and, when
it stops, writes what it served (port, models, calls, its OLLAMA_* environment) to
$FAKE_OLLAMA_STATE/ollama-<job>-<node>-<pid>.json; each answered call is a line of calls-<job>-<node>-<pid>.tsv.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _url() -> str:
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    return host if host.startswith("http") else f"http://{host}"


def serve() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from stub_server import StubServer, table_responder

    delay = float(os.environ.get("FAKE_OLLAMA_CALL_S", "0"))
    inner = table_responder({})
    state = Path(os.environ["FAKE_OLLAMA_STATE"])
    state.mkdir(parents=True, exist_ok=True)
    job, node = os.environ.get("SLURM_JOB_ID", "0"), os.environ.get("SLURM_NODEID", "0")
    answered = state / f"calls-{job}-{node}-{os.getpid()}.tsv"

    def respond(model: str, messages: list[dict[str, object]]) -> str:
        time.sleep(delay)
        answer = inner(model, messages)  # type: ignore[arg-type]
        prompt = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
        with answered.open("a") as f:  # one line per call answered: what a test can wait for
            f.write(f"{model}\t{prompt}\n")
        return answer

    port = int(_url().rsplit(":", 1)[1])
    stopped: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    with StubServer([], respond, port=port) as server:
        print(f"fake ollama serve on {server.url}", flush=True)
        while not stopped:
            time.sleep(0.2)
        report = {"port": port, "node": os.environ.get("SLURMD_NODENAME"), "calls": server.state.calls.total(),
                  "models": list(server.state.models),
                  "env": {k: v for k, v in os.environ.items() if k.startswith("OLLAMA_")}}  # fmt: skip
    (state / f"ollama-{job}-{node}-{os.getpid()}.json").write_text(json.dumps(report))
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "serve":
        return serve()
    try:
        if command == "list":
            urllib.request.urlopen(f"{_url()}/api/tags", timeout=5).read()
            return 0
        if command == "pull":
            body = json.dumps({"model": argv[1], "stream": False}).encode()
            urllib.request.urlopen(urllib.request.Request(f"{_url()}/api/pull", data=body), timeout=30).read()
            print("success")
            return 0
    except (urllib.error.URLError, OSError):
        print("Error: could not connect to ollama app, is it running?", file=sys.stderr)
        return 1
    print(f"fake ollama: {command!r} is not implemented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
