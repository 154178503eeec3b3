"""The simulated Ollama node the benchmarks use: slots, generation time, load time, models in memory."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from stub_server import StubServer


def _ask(url: str, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    httpx.post(f"{url}/api/chat", json=body, timeout=30).raise_for_status()


def _burst(url: str, models: list[str]) -> float:
    start = time.monotonic()
    with ThreadPoolExecutor(len(models)) as pool:
        list(pool.map(lambda m: _ask(url, m), models))
    return time.monotonic() - start


def test_slots_bound_concurrency_and_loads_are_counted_once() -> None:
    with StubServer(["a", "b"], slots=2, call_seconds=0.3, load_seconds=0.5, max_loaded=1) as node:
        took = _burst(node.url, ["a"] * 4)  # one load, then 4 calls on 2 slots: 2 rounds
        assert dict(node.state.loads) == {"a": 1} and node.state.busy_seconds == 1.2
        assert 0.5 + 0.6 <= took < 0.5 + 0.6 + 1.0
        _ask(node.url, "b")  # one model in memory: b evicts a, then a evicts b again
        _ask(node.url, "a")
        assert dict(node.state.loads) == {"a": 2, "b": 1} and node.state.loaded == ["a"]


def test_two_models_fit_when_the_node_holds_two() -> None:
    with StubServer(["a", "b"], slots=2, call_seconds=0.2, load_seconds=0.2, max_loaded=2) as node:
        for _ in range(3):
            _burst(node.url, ["a", "b"])
        assert dict(node.state.loads) == {"a": 1, "b": 1} and node.state.calls.total() == 6
