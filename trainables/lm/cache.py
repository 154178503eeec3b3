"""The LM response cache of a node: DSPy's own cache, keyed by the identity of the model that answers.

DSPy's cache key leaves out `api_base`, so two servers holding different models under one name, or a model
re-pulled under the same name, would share entries. Here the key also holds the model's identity: its content
(the Ollama digest, the GGUF file's sha256) where the serving code knows it, else the endpoint itself. Keying by
content, not by port, is what lets a resumed job hit the first job's entries: every job picks free ports for its
Ollamas and llama.cpp servers (a real-Slurm trial: 0 of 3 hits on a new port when the key held the endpoint).

A retry must not replay an answer the trial could not parse: `evaluate` opens a `scope()` per example and
`forget`s the responses cached inside it when the example failed to parse.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import dspy
from dspy.clients.cache import Cache

DISK_LIMIT_BYTES = 2 * 1024**3

_IDENTITIES: dict[tuple[str, str], str] = {}
_LOCK = threading.Lock()
_HIT = threading.local()
_SCOPE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("arb_cache_scope", default=None)


def register_identity(model: str, endpoint: str | None, identity: str) -> None:
    """Record what answers for `model` at `endpoint` (see `identity`); it keys every cached response of that pair."""
    with _LOCK:
        _IDENTITIES[(model, endpoint or "")] = identity


def identity(endpoint: str | None, content: str | None, fallback: str) -> str:
    """A model's identity for cache keys: its content hash alone when known (any port, any job, any node that
    serves the same weights shares entries), else the endpoint with `fallback` (the registry's name or file):
    unverified servers never share entries."""
    if content:
        return f"content:{content}"
    return f"endpoint:{endpoint or ''}\0{fallback}"


def _field(request: dict[str, Any], *names: str) -> str:
    """A request field, at the top (LiteLLM-style keys) or inside `request` (DSPy's native-engine keys)."""
    inner = request.get("request")
    for where in (request, inner if isinstance(inner, dict) else {}):
        for name in names:
            if where.get(name):
                return str(where[name])
    return ""


def take_hit() -> bool:
    """Whether the last cache lookup on this thread was a hit (and forget it): DSPy's history entries do not say."""
    hit = bool(getattr(_HIT, "value", False))
    _HIT.value = False
    return hit


class EndpointCache(Cache):
    """`dspy.clients.cache.Cache` whose keys include the identity of the model serving the request."""

    def cache_key(self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> str:
        base = super().cache_key(request, ignored_args_for_cache_key)
        model, endpoint = _field(request, "model"), _field(request, "api_base", "base_url")
        who = _IDENTITIES.get((model, endpoint)) or identity(endpoint, None, "")
        return sha256(f"{model}\0{who}\0{base}".encode()).hexdigest()

    def get(self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> Any:
        found = super().get(request, ignored_args_for_cache_key)
        _HIT.value = found is not None
        return found

    def put(
        self,
        request: dict[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
    ) -> None:
        super().put(request, value, ignored_args_for_cache_key, enable_memory_cache)
        keys = _SCOPE.get()
        if keys is not None:
            with contextlib.suppress(Exception):
                keys.append(self.cache_key(request, ignored_args_for_cache_key))

    def forget(self, keys: list[str]) -> None:
        """Drop these entries from memory and disk."""
        for key in keys:
            with self._lock:
                self.memory_cache.pop(key, None)
            if self.enable_disk_cache:
                self.disk_cache.delete(key)


def install(directory: Path | None) -> None:
    """Use the partitioned cache in this process (disk entries under `directory`), or no cache at all (None)."""
    if directory is None:
        dspy.cache = Cache(enable_disk_cache=False, enable_memory_cache=False, disk_cache_dir=None)
        return
    directory.mkdir(parents=True, exist_ok=True)
    dspy.cache = EndpointCache(
        enable_disk_cache=True,
        enable_memory_cache=True,
        disk_cache_dir=str(directory),
        disk_size_limit_bytes=DISK_LIMIT_BYTES,
    )


@contextlib.contextmanager
def scope() -> Iterator[list[str]]:
    """Collect the keys of the responses cached inside the block (see `forget_scope`)."""
    keys: list[str] = []
    token = _SCOPE.set(keys)
    try:
        yield keys
    finally:
        _SCOPE.reset(token)


def forget_scope(keys: list[str]) -> None:
    """Drop the responses cached in a scope, so a retry asks the model again."""
    cache = dspy.cache
    if isinstance(cache, EndpointCache) and keys:
        cache.forget(keys)
