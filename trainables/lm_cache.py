"""The LM response cache of a node: DSPy's own cache, partitioned by endpoint and model version.

DSPy's cache key leaves out `api_base`, so two Ollama nodes, or a model re-pulled under the same name, would share
entries. Here the key also holds the endpoint and a version string (the Ollama digest, the GGUF file, the API model
id), and the disk cache lives under the node's own `$ARB_HOME/cache/lm`, so entries never cross nodes.

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

_VERSIONS: dict[tuple[str, str], str] = {}
_VERSIONS_LOCK = threading.Lock()
_HIT = threading.local()
_SCOPE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("arb_cache_scope", default=None)


def register_version(model: str, endpoint: str | None, version: str) -> None:
    """Record which version of `model` answers at `endpoint`; it becomes part of every cache key for that pair."""
    with _VERSIONS_LOCK:
        _VERSIONS[(model, endpoint or "")] = version


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
    """`dspy.clients.cache.Cache` whose keys include the endpoint and model version of the request."""

    def cache_key(self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> str:
        base = super().cache_key(request, ignored_args_for_cache_key)
        model, endpoint = _field(request, "model"), _field(request, "api_base", "base_url")
        version = _VERSIONS.get((model, endpoint), "")
        return sha256(f"{model}\0{endpoint}\0{version}\0{base}".encode()).hexdigest()

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
