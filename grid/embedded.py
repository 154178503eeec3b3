"""Serving the embedded models: llama.cpp's OpenAI-compatible server (`llama-server`) on 127.0.0.1, one process
per model, with as many parallel slots as a trial keeps requests in flight to it (`ModelEntry.in_flight`).

The GGUF files come from PyPI packages (see `gguf` and `split_gguf` in grid/models.yaml). Servers are started
before trials, checked until they answer, timed on two requests (their per-call timeout follows from that speed
and `max_tokens`), supervised while the sweep runs, and stopped when the run ends, on Ctrl-C, and (through the
kernel's parent-death signal) even if the driver is killed outright.

Supervision: a server that exits is restarted once; if it dies again, the sweep is stopped (resumably) with one
line saying which model, how it died, its log file and the likely fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid.model_files import file_sha256, gguf_path
from trainables.errors import ArbError
from trainables.registry import ModelEntry, ModelRegistry

DEFAULT_PORT = 8761
_READY_TIMEOUT_S = 120.0


BUILD_HINT = "build it with `scripts/install-llama-cpp.sh .venv` (or `make install`)"


def llama_server() -> Path:
    """llama.cpp's server binary: `$ARB_LLAMA_SERVER`, else the one `scripts/install-llama-cpp.sh` put beside this
    Python, else `llama-server` on PATH."""
    chosen = os.environ.get("ARB_LLAMA_SERVER")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise ArbError(f"ARB_LLAMA_SERVER={chosen} is not an executable file", BUILD_HINT)
        return Path(chosen)
    beside = Path(sys.executable).parent / "llama-server"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    if found is None:
        raise ArbError("llama.cpp's server (llama-server) is not installed", BUILD_HINT)
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn does: connections of a server that just stopped linger in TIME_WAIT, which must not count
        # as "taken" (the next grid of a `then:` chain reuses the port seconds later).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM to the server if the driver dies, even by SIGKILL.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class _Server:
    name: str
    port: int
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        # Appending: after a crash, the log keeps what the dead server wrote next to the restarted one's.
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to arb, which stops the servers in order
                preexec_fn=_die_with_parent,
                env={k: v for k, v in os.environ.items() if "KEY" not in k and "TOKEN" not in k},
            )

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def _log_tail(server: _Server) -> str:
    tail = server.log_path.read_text(errors="replace")[-800:] if server.log_path.exists() else ""
    return " ".join(tail.split())[-300:]


def how_it_died(code: int) -> str:
    """`exited with code 1`, or `was killed by SIGSEGV` for a negative return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def likely_fix(code: int) -> str:
    """What usually causes a server death of this kind, and what to do about it."""
    if code in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS, -signal.SIGFPE):
        return (
            "llama.cpp crashed in native code; a build that uses CPU instructions this machine cannot run (AMX, "
            "AVX-512 in some VMs) dies like this: rebuild it portably with `scripts/install-llama-cpp.sh .venv` "
            "(or `make install`)"
        )
    if code == -signal.SIGKILL:
        return "it was killed from outside: the kernel's OOM killer (see `dmesg`; free memory or use a smaller model)"
    return "read the end of the log"


def _wait_ready(server: _Server, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = server.returncode()
        if code is not None:
            raise ArbError(
                f"llama.cpp server for {server.name!r} {how_it_died(code)}: {_log_tail(server)}",
                f"{likely_fix(code)}; log: {server.log_path}",
            )
        try:
            # llama-server answers /health with 503 while it loads the weights, 200 once it serves (tools/server
            # README, "GET /health")
            if httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ArbError(
        f"llama.cpp server for {server.name!r} did not answer within {timeout_s:.0f} s",
        f"see {server.log_path}",
    )


def _stop(server: _Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Speed:
    """A served model's measured speed on this machine, tokens per second."""

    prompt_tok_s: float
    generate_tok_s: float


_SPEED_PROMPT = "Repeat after me. " + " ".join(f"word{i}" for i in range(300))


def measure_speed(url: str, model_id: str) -> Speed:
    """Time two requests: a ~600-token prompt with 1 token out (prompt speed), and a short prompt with 32 tokens
    out (generation speed, after subtracting that prompt's share). Also loads the weights into memory."""
    import httpx

    def complete(prompt: str, max_tokens: int) -> tuple[float, dict[str, int]]:
        start = time.perf_counter()
        answer = httpx.post(
            f"{url}/completions",
            json={"model": model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
            timeout=600,
        )
        answer.raise_for_status()
        return time.perf_counter() - start, answer.json()["usage"]

    took, usage = complete(_SPEED_PROMPT, 1)
    prompt_tok_s = usage["prompt_tokens"] / took
    took, usage = complete("Count from one to fifty in words, separated by commas:", 32)
    generating = max(took - usage["prompt_tokens"] / prompt_tok_s, 1e-3)
    return Speed(prompt_tok_s, max(usage["completion_tokens"], 1) / generating)


def call_timeout(entry: ModelEntry, speed: Speed) -> float:
    """Per-call timeout for a CPU-served model: twice the time of the longest call its context allows (a full
    prompt, then `max_tokens` generated) at the measured speed, times the slots that share the CPU with it, and
    never less than the registry's `timeout_s`; a slow but working model is not cut off, a stalled one is still
    noticed."""
    longest = (entry.context - entry.max_tokens) / speed.prompt_tok_s + entry.max_tokens / speed.generate_tok_s
    return max(entry.timeout_s, 2.0 * longest * entry.in_flight + 10.0)


def check_embedded(names: list[str], registry: ModelRegistry, base_port: int = DEFAULT_PORT) -> None:
    """Fail before any work starts if an embedded model cannot be served: missing extra, file or port."""
    embedded = [n for n in names if registry.get(n).provider_spec.started_here]
    if not embedded:
        return
    llama_server()
    for i, name in enumerate(embedded):
        gguf_path(registry.get(name))
        _check_port(base_port + i, name)


def _check_port(port: int, name: str) -> None:
    if not _port_free(port):
        raise ArbError(
            f"port {port} on 127.0.0.1 is taken, so the llama.cpp server for {name!r} cannot start",
            "stop whatever listens there (another `arb run`?) or pass --embedded-port with a free port",
        )


@dataclass
class EmbeddedServers:
    """The running servers of a sweep: where each model answers, its per-call timeout, and, once a server has
    died twice, why the sweep must stop (`failure`)."""

    endpoints: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    speeds: dict[str, Speed] = field(default_factory=dict)
    failure: ArbError | None = None
    restarts: int = 0


class _Supervisor(threading.Thread):
    """Polls the servers; restarts one that exits, once; records the failure if it dies again."""

    def __init__(self, servers: list[_Server], state: EmbeddedServers, stream: Any, poll_s: float = 0.5) -> None:
        super().__init__(name="arb-embedded-supervisor", daemon=True)
        self.servers, self.state, self.stream, self.poll_s = servers, state, stream, poll_s
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.poll_s):
            for server in self.servers:
                code = server.returncode()
                if code is None or self.halt.is_set():
                    continue
                if server.restarts >= 1:
                    self.state.failure = ArbError(
                        f"the llama.cpp server for {server.name!r} {how_it_died(code)} again after a restart "
                        f"(log: {server.log_path}); the sweep stopped and can be resumed",
                        likely_fix(code),
                    )
                    return
                server.restarts += 1
                self.state.restarts += 1
                print(
                    f"  ! llama.cpp server for {server.name!r} {how_it_died(code)}; restarting it once "
                    f"(log: {server.log_path})",
                    file=self.stream,
                    flush=True,
                )
                server.start()
                try:
                    _wait_ready(server, _READY_TIMEOUT_S)
                except ArbError as exc:
                    if server.returncode() is None:  # alive but silent; a death is reported by the next poll
                        self.state.failure = ArbError(f"{exc.problem} after a restart", exc.fix)
                        return


def served_identity(entry: ModelEntry, path: Path, engine: str) -> str:
    """What a server answers with: the engine, the GGUF's content and the server settings that change answers. The
    response cache is keyed by it, so the next run, on another port, reuses this one's answers.

    The slot count is among them: llama.cpp decodes the requests of several slots in one batch, and a batch of
    another size rounds differently (measured with qwen-coder-1.5b at temperature 0: 2 of 16 answers differ between 1
    and 4 in flight; BENCHMARKS.md "Embedded requests in flight")."""
    sha = entry.split_gguf.sha256 if entry.split_gguf is not None else file_sha256(path)  # a split is verified
    return (
        f"{engine} gguf-sha256:{sha} n_ctx={entry.context} chat_format={entry.chat_format or 'auto'} seed=0 "
        f"slots={entry.in_flight}"
    )


def engine_version(binary: Path) -> str:
    """`llama-server-<version>-<commit>` from the binary's `--version` line, `version: 0.5.0-dev (build 1, commit
    0c1e570)` (printed on stderr)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"version: (\S+) \(build \S+, commit (\w+)\)", out.stdout + out.stderr)
    if found is None:
        raise ArbError(f"{binary} --version did not say its version: {(out.stdout + out.stderr)[-200:]!r}", BUILD_HINT)
    return f"llama-server-{found[1]}-{found[2]}"


@contextlib.contextmanager
def serve_embedded(
    names: list[str],
    registry: ModelRegistry,
    log_dir: Path,
    base_port: int = DEFAULT_PORT,
    threads: int | None = None,
    stream: Any = sys.stderr,
) -> Iterator[EmbeddedServers]:
    """Start and supervise a server for each embedded model in `names`; stops them on exit."""
    state = EmbeddedServers()
    embedded = [n for n in names if registry.get(n).provider_spec.started_here]
    if not embedded:
        yield state
        return
    binary = llama_server()
    engine = engine_version(binary)
    paths = {n: gguf_path(registry.get(n)) for n in embedded}
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[_Server] = []
    supervisor: _Supervisor | None = None
    try:
        for i, name in enumerate(embedded):
            entry = registry.get(name)
            port = base_port + i
            _check_port(port, name)
            log_path = log_dir / f"llama-server-{name}.log"
            log_path.unlink(missing_ok=True)
            slots = entry.in_flight
            cmd = [
                str(binary),
                "--model", str(paths[name]),
                "--alias", entry.id,
                "--host", "127.0.0.1",
                "--port", str(port),
                # each slot gets the whole registry context: the KV cache is split evenly between slots unless
                # unified (tools/server README, `--kv-unified`), and a slot must hold the longest prompt
                "--ctx-size", str(entry.context * slots),
                "--parallel", str(slots),
                "--no-kv-unified",
                "--threads", str(threads or os.cpu_count() or 1),
                "--threads-batch", str(threads or os.cpu_count() or 1),
                "--seed", "0",
                "--no-webui",
            ]  # fmt: skip
            if entry.chat_format:
                # a built-in template by name; under Jinja (the default) the name would be taken as the template's
                # own text, and the prompt would be the word "gemma" (checked with gemma3: 3 prompt tokens)
                cmd += ["--no-jinja", "--chat-template", entry.chat_format]
            server = _Server(name, port, cmd, log_path)
            server.start()
            servers.append(server)
        for server in servers:
            _wait_ready(server, _READY_TIMEOUT_S)
            entry = registry.get(server.name)
            speed = measure_speed(server.url, entry.id)
            state.endpoints[server.name] = server.url
            state.speeds[server.name] = speed
            state.timeouts[server.name] = call_timeout(entry, speed)
            state.versions[server.name] = served_identity(entry, paths[server.name], engine)
        supervisor = _Supervisor(servers, state, stream)
        supervisor.start()
        yield state
    finally:
        if supervisor is not None:
            supervisor.halt.set()
            supervisor.join(timeout=_READY_TIMEOUT_S + 5)
        for server in servers:
            _stop(server)
