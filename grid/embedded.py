"""Serving the embedded models: llama.cpp's OpenAI-compatible server on 127.0.0.1, one process per model.

The GGUF files come from PyPI packages (see `gguf` in grid/models.yaml). Servers are started before trials,
checked until they answer, and stopped when the run ends, on Ctrl-C, and (through the kernel's parent-death
signal) even if the driver is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grid.errors import ArbError
from grid.registry import ModelEntry, ModelRegistry

DEFAULT_PORT = 8761
_READY_TIMEOUT_S = 120.0
_INSTALL_HINT = "pip install 'intelligence-arbitrage[embedded]' (or `make install`)"


def gguf_path(entry: ModelEntry) -> Path:
    """Locate the model file through its installed package; an error says which package to install."""
    assert entry.gguf is not None
    module_name, _, how = entry.gguf.partition(":")
    if importlib.util.find_spec(module_name) is None:
        raise ArbError(f"embedded model {entry.id!r} needs the Python package {module_name!r}", _INSTALL_HINT)
    module = importlib.import_module(module_name)
    if how == "assemble":
        path = Path(module.assemble())
    elif how.startswith("file:"):
        path = Path(module.__file__ or "").parent / how.removeprefix("file:")
    else:
        raise ArbError(f"model {entry.id!r}: gguf {entry.gguf!r} is not '<module>:file:<path>' or '<module>:assemble'")
    if not path.is_file():
        raise ArbError(f"embedded model file {path} is missing", f"reinstall: {_INSTALL_HINT}")
    return path


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise ArbError("llama.cpp's server (llama-cpp-python[server]) is not installed", _INSTALL_HINT)


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
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _wait_ready(server: _Server, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-800:] if server.log_path.exists() else ""
            last = " ".join(tail.split())[-300:]
            raise ArbError(
                f"llama.cpp server for {server.name!r} exited with code {server.proc.returncode}: {last}",
                f"see {server.log_path}",
            )
        try:
            if httpx.get(f"{server.url}/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ArbError(
        f"llama.cpp server for {server.name!r} did not answer within {timeout_s:.0f} s",
        f"see {server.log_path}",
    )


def _stop(server: _Server) -> None:
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


def check_embedded(names: list[str], registry: ModelRegistry, base_port: int = DEFAULT_PORT) -> None:
    """Fail before any work starts if an embedded model cannot be served: missing extra, file or port."""
    embedded = [n for n in names if registry.get(n).provider == "embedded"]
    if not embedded:
        return
    _require_llama_cpp()
    for i, name in enumerate(embedded):
        gguf_path(registry.get(name))
        _check_port(base_port + i, name)


def _check_port(port: int, name: str) -> None:
    if not _port_free(port):
        raise ArbError(
            f"port {port} on 127.0.0.1 is taken, so the llama.cpp server for {name!r} cannot start",
            "stop whatever listens there (another `arb run`?) or pass --embedded-port with a free port",
        )


@contextlib.contextmanager
def serve_embedded(
    names: list[str],
    registry: ModelRegistry,
    log_dir: Path,
    base_port: int = DEFAULT_PORT,
    threads: int | None = None,
) -> Iterator[dict[str, str]]:
    """Start a server for each embedded model in `names`; yields {model name: base URL}; stops them on exit."""
    embedded = [n for n in names if registry.get(n).provider == "embedded"]
    if not embedded:
        yield {}
        return
    _require_llama_cpp()
    paths = {n: gguf_path(registry.get(n)) for n in embedded}
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[_Server] = []
    try:
        for i, name in enumerate(embedded):
            entry = registry.get(name)
            port = base_port + i
            _check_port(port, name)
            log_path = log_dir / f"llama-server-{name}.log"
            cmd = [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(paths[name]),
                "--model_alias", entry.id,
                "--host", "127.0.0.1",
                "--port", str(port),
                "--n_ctx", str(entry.context),
                "--n_threads", str(threads or os.cpu_count() or 1),
                "--n_threads_batch", str(threads or os.cpu_count() or 1),
                "--seed", "0",
                "--verbose", "False",
            ]  # fmt: skip
            if entry.chat_format:
                cmd += ["--chat_format", entry.chat_format]
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C goes to arb, which stops the servers in order
                    preexec_fn=_die_with_parent,
                    env={k: v for k, v in os.environ.items() if "KEY" not in k and "TOKEN" not in k},
                )
            servers.append(_Server(name, port, proc, log_path))
        for server in servers:
            _wait_ready(server, _READY_TIMEOUT_S)
        yield {s.name: s.url for s in servers}
    finally:
        for server in servers:
            _stop(server)
