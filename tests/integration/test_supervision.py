"""Supervised embedded servers: a server that exits is restarted once; a second death becomes one line naming the
model, how it died, its log and the likely fix. The per-call timeout follows the measured speed.

The supervised process here is the stub LM server (it answers /v1/models like llama.cpp's server), so the unit
tests need no model; `tests/integration/test_embedded_sweep.py` does the same with llama.cpp inside a real sweep."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import free_port

from grid.embedded import (
    EmbeddedServers,
    Speed,
    _Server,
    _stop,
    _Supervisor,
    _wait_ready,
    call_timeout,
    how_it_died,
    likely_fix,
)
from trainables.registry import ModelEntry

STUB = Path(__file__).parents[1] / "stub_server.py"


def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[_Server]:
    port = free_port()
    cmd = [sys.executable, str(STUB), "--port", str(port), "--models", "tiny"]
    srv = _Server("tiny", port, cmd, tmp_path / "llama-server-tiny.log")
    srv.start()
    _wait_ready(srv, 30)
    yield srv
    _stop(srv)


def test_a_server_that_dies_is_restarted_once_then_the_failure_is_one_line(server: _Server) -> None:
    state, out = EmbeddedServers(), io.StringIO()
    supervisor = _Supervisor([server], state, out, poll_s=0.05)
    supervisor.start()
    try:
        first = server.proc
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        _until(lambda: server.restarts == 1 and server.proc is not first)
        _wait_ready(server, 30)  # the restarted server answers on the same port
        assert state.failure is None and state.restarts == 1
        assert "'tiny' was killed by SIGKILL; restarting it once" in out.getvalue()
        assert str(server.log_path) in out.getvalue()

        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        _until(lambda: state.failure is not None)
        message = str(state.failure)
        assert "\n" not in message
        assert "'tiny' was killed by SIGKILL again after a restart" in message
        assert str(server.log_path) in message and "can be resumed" in message and "OOM" in message
        supervisor.join(5)
        assert not supervisor.is_alive()  # it stopped watching: a failed sweep restarts nothing more
        assert server.restarts == 1  # never a second restart
    finally:
        supervisor.halt.set()
        supervisor.join(5)


def test_stopping_the_servers_is_not_a_death(server: _Server) -> None:
    state = EmbeddedServers()
    supervisor = _Supervisor([server], state, io.StringIO(), poll_s=0.05)
    supervisor.start()
    supervisor.halt.set()
    supervisor.join(5)
    _stop(server)
    time.sleep(0.2)
    assert state.failure is None and server.restarts == 0


@pytest.mark.parametrize(
    ("code", "how", "fix"),
    [
        (-signal.SIGSEGV, "was killed by SIGSEGV", "install-llama-cpp.sh"),
        (-signal.SIGILL, "was killed by SIGILL", "portabl"),
        (-signal.SIGKILL, "was killed by SIGKILL", "OOM killer"),
        (1, "exited with code 1", "log"),
    ],
)
def test_how_a_server_died_and_the_likely_fix(code: int, how: str, fix: str) -> None:
    assert how_it_died(code) == how
    assert fix in likely_fix(code)


def test_call_timeout_follows_speed_and_max_tokens() -> None:
    entry = ModelEntry(
        provider="embedded", id="m", gguf="m:file:m.gguf", max_tokens=384, context=4096, timeout_s=30, max_in_flight=1
    )
    fast, slow = Speed(prompt_tok_s=1000, generate_tok_s=100), Speed(prompt_tok_s=50, generate_tok_s=10)
    assert call_timeout(entry, fast) == 30  # never below the registry's floor
    # slow: (4096 - 384) / 50 + 384 / 10 = 112.6 s for the longest call; twice that, plus 10 s
    assert call_timeout(entry, slow) == pytest.approx(2 * 112.64 + 10)
    longer = entry.model_copy(update={"max_tokens": 768})
    assert call_timeout(longer, slow) > call_timeout(entry, slow)
    # four slots share the CPU: a call may take four times as long
    shared = entry.model_copy(update={"max_in_flight": 4})
    assert call_timeout(shared, slow) == pytest.approx(2 * 112.64 * 4 + 10)
