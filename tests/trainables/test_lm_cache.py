"""The node's LM response cache: hits cost no call, entries are keyed by the model that answers (its digest or
file, not its port), and an answer that failed to parse is never replayed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stub_server import StubServer, table_responder
from test_trial import _config, _trial

from trainables.lm import cache as lm_cache
from trainables.trial import execute_trial

NewStore = Callable[[str], str]


def _run(
    new_store: NewStore, store: str, endpoints: dict[str, str], versions: dict[str, str] | None = None, **trial: Any
) -> dict[str, float]:
    """One baseline trial in a fresh tracking store (so nothing is reused from MLflow; only the cache can help)."""
    config = _config(_trial("llama3.2", optimizer="none", **trial), new_store(store), endpoints)
    config["runtime"]["versions"] = versions or {}
    return execute_trial(config)


def test_a_second_identical_trial_is_served_from_the_cache(
    stub: StubServer, new_store: NewStore, arb_home: Path
) -> None:
    first = _run(new_store, "a.db", {"llama3.2": stub.url})
    calls = stub.state.calls.total()
    second = _run(new_store, "b.db", {"llama3.2": stub.url})
    assert stub.state.calls.total() == calls == first["lm_calls"] == 8
    assert second["lm_calls"] == second["cache_hits"] == 8 and first["cache_hits"] == 0
    assert second["baseline_score"] == first["baseline_score"]
    assert second["prompt_tokens"] == 0 and second["cost_usd"] == 0  # a hit is reported, but costs nothing
    assert any((arb_home / "cache" / "lm").iterdir())


def test_the_same_model_on_another_port_hits_the_cache_another_model_never_does(
    stub: StubServer, known_answers: dict[str, str], new_store: NewStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed job starts its Ollamas on new free ports: the entries are keyed by the model's digest, not the
    port, so it pays no call twice; a re-pulled model (a new digest) is asked again."""
    monkeypatch.setenv("OLLAMA_HOST", stub.url)  # through the registry: the trial asks the node's Ollama its digest
    _run(new_store, "a.db", {})
    assert stub.state.calls.total() == 8
    with StubServer(["llama3.2"], table_responder(known_answers)) as moved:  # same model, a new port
        monkeypatch.setenv("OLLAMA_HOST", moved.url)
        again = _run(new_store, "b.db", {})
        assert moved.state.calls.total() == 0 and again["cache_hits"] == 8
        moved.state.digests["llama3.2"] = "re-pulled"
        third = _run(new_store, "c.db", {})
        assert moved.state.calls.total() == 8 and third["cache_hits"] == 0


def test_an_embedded_server_on_a_new_port_hits_the_cache_by_its_file_identity(
    stub: StubServer, known_answers: dict[str, str], new_store: NewStore
) -> None:
    """The driver hands each embedded server's content identity (GGUF sha256 and settings) to the trial."""
    first = _run(new_store, "a.db", {"llama3.2": stub.url}, versions={"llama3.2": "gguf-sha256:aa n_ctx=4096"})
    with StubServer(["llama3.2"], table_responder(known_answers)) as moved:
        same = _run(new_store, "b.db", {"llama3.2": moved.url}, versions={"llama3.2": "gguf-sha256:aa n_ctx=4096"})
        assert moved.state.calls.total() == 0 and same["cache_hits"] == first["lm_calls"] == 8
        other = _run(new_store, "c.db", {"llama3.2": moved.url}, versions={"llama3.2": "gguf-sha256:bb n_ctx=4096"})
        assert other["cache_hits"] == 0
        # a server whose content is unknown shares nothing across ports
        unknown = _run(new_store, "d.db", {"llama3.2": moved.url})
        assert unknown["cache_hits"] == 0 and moved.state.calls.total() == 16


def test_unparseable_answers_are_not_replayed(new_store: NewStore) -> None:
    with StubServer(["llama3.2"], lambda model, messages: "I refuse to use your format.") as server:
        first = _run(new_store, "a.db", {"llama3.2": server.url})
        second = _run(new_store, "b.db", {"llama3.2": server.url})
    assert first["parse_failures_baseline"] == second["parse_failures_baseline"] == 8
    assert second["cache_hits"] == 0 and server.state.calls.total() == first["lm_calls"] + second["lm_calls"]


def test_grid_can_turn_the_cache_off(stub: StubServer, new_store: NewStore) -> None:
    _run(new_store, "a.db", {"llama3.2": stub.url})
    trial = _trial("llama3.2", optimizer="none").model_copy(update={"lm_cache": False})
    again = execute_trial(_config(trial, new_store("b.db"), {"llama3.2": stub.url}))
    assert again["cache_hits"] == 0 and stub.state.calls.total() == 16


def test_keys_hold_the_model_identity_or_else_the_endpoint() -> None:
    cache = lm_cache.EndpointCache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None)
    request = {"model": "ollama_chat/m", "messages": [{"role": "user", "content": "hi"}], "api_base": "http://a"}
    moved = {**request, "api_base": "http://b"}
    key = cache.cache_key(request, ["api_base"])
    assert cache.cache_key(moved, ["api_base"]) != key  # nothing known of either server: the endpoint keys
    lm_cache.register_identity("ollama_chat/m", "http://a", lm_cache.identity("http://a", "sha256:1", "m"))
    lm_cache.register_identity("ollama_chat/m", "http://b", lm_cache.identity("http://b", "sha256:1", "m"))
    assert cache.cache_key(request, ["api_base"]) == cache.cache_key(moved, ["api_base"]) != key
    lm_cache.register_identity("ollama_chat/m", "http://b", lm_cache.identity("http://b", "sha256:2", "m"))
    assert cache.cache_key(request, ["api_base"]) != cache.cache_key(moved, ["api_base"])


def test_the_cluster_cache_service_keeps_a_cut_sessions_answers(tmp_path: Path) -> None:
    """The head's cache service (used in-process here): entries survive a session killed before it saved (the
    journal, even with its last record cut short), and a saved session leaves one snapshot file and an empty
    journal; nothing in the shared directory is a database."""
    from trainables.lm.cache import CacheService

    shared = tmp_path / "shared" / "lm-cluster.tar"
    first = CacheService(str(shared))
    first.set("a", b"answer a")
    first.set("b", b"answer b")
    first.delete("b")
    first.set("c", b"answer c")
    first.journal.close()  # killed: no save
    journal = first.journal_path
    journal.write_bytes(journal.read_bytes()[:-3])  # the last record cut mid-write
    second = CacheService(str(shared))
    assert (second.get("a"), second.get("b"), second.get("c")) == (b"answer a", None, None)
    assert second.journal_path != journal  # a journal of its own
    second.set("d", b"answer d")
    assert second.save() == 2 and not journal.exists()
    left = sorted(shared.parent.iterdir())
    assert [p.suffix for p in left] == [".journal", ".tar"] and left[0].stat().st_size == 0
    third = CacheService(str(shared))
    assert (third.get("a"), third.get("d"), third.entries()) == (b"answer a", b"answer d", 2)
