"""The LM response cache of a node: DSPy's own cache, keyed by the identity of the model that answers.

DSPy's cache key leaves out `api_base`, so two servers holding different models under one name, or a model
re-pulled under the same name, would share entries. Here the key also holds the model's identity: its content
(the Ollama digest, the GGUF file's sha256) where the serving code knows it, else the endpoint itself. Keying by
content, not by port, is what lets a resumed job hit the first job's entries: every job picks free ports for its
Ollamas and llama.cpp servers (a real-Slurm trial: 0 of 3 hits on a new port when the key held the endpoint).

A retry must not replay an answer the trial could not parse: `evaluate` opens a `scope()` per example and
`forget`s the responses cached inside it when the example failed to parse.

On one machine the entries live in `$ARB_HOME/cache/lm` (DSPy's disk cache: SQLite files on a local disk). On a
cluster `$ARB_HOME` is a shared filesystem, where SQLite's locks are unreliable (NFS, Lustre; DSPy's disk cache
crashing there is stanfordnlp/dspy#8799) and nodes would share entries only through that file. There, the driver
starts one `CacheService` actor on the head, whose store is on the head's local disk; every trial's cache reads
and writes through it (`RemoteStore`), so a teacher's answers are computed once per task for every student on any
node. Each new entry is appended to the session's own journal (`$ARB_HOME/cache/lm-cluster.<id>.journal`, one
writer, plain appends) as it comes; at the end of the session the store is written to `lm-cluster.tar` as one file
and the journals it holds are removed; the next session's service reads the snapshot and every journal left, so a
session cut before its end keeps its answers. Two sessions at once on one ARB_HOME never write the same journal;
the later snapshot wins, and an entry lost that way costs a call again, never a result.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pickle
import shutil
import tarfile
import tempfile
import threading
import uuid
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


SERVICE = "arb-lm-cache"
"""The name of the cluster's cache actor in a Ray job."""


class CacheService:
    """The cluster's LM cache: a diskcache store on this (the head's) local disk, restored from `snapshot` and its
    journal, every change appended to the journal, and written back whole by `save`. Values arrive pickled by the
    trials (the same objects DSPy's disk cache pickles)."""

    def __init__(self, snapshot: str) -> None:
        import diskcache

        self.snapshot = Path(snapshot)
        self.local = Path(tempfile.mkdtemp(prefix="arb-lm-cache-"))
        if self.snapshot.exists():
            with tarfile.open(self.snapshot) as tar:
                tar.extractall(self.local, filter="data")
        self.store = diskcache.Cache(str(self.local / "store"), size_limit=DISK_LIMIT_BYTES)
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        # sessions killed before `save` left journals: oldest first, each possibly cut short in its last record
        self.replayed = sorted(self.snapshot.parent.glob(f"{self.snapshot.stem}.*.journal"),
                               key=lambda j: j.stat().st_mtime)  # fmt: skip
        for journal in self.replayed:
            self._replay(journal)
        self._open_journal()

    def _open_journal(self) -> None:
        # a journal per session: two sessions on one ARB_HOME never append to the same file
        self.journal_path = self.snapshot.with_name(f"{self.snapshot.stem}.{uuid.uuid4().hex[:12]}.journal")
        self.journal = self.journal_path.open("ab")

    def _replay(self, journal: Path) -> None:
        with journal.open("rb") as f:
            while True:
                try:
                    key, value = pickle.load(f)  # written by a service of this cluster
                except (EOFError, pickle.UnpicklingError, ValueError):
                    break
                if value is None:
                    self.store.delete(key)
                else:
                    self.store.set(key, value)

    def _log(self, key: str, value: bytes | None) -> None:
        # Every change is appended to the journal as it happens, by this one writer: a session cut by scancel or
        # a time limit (the head's Ray going down with the driver) keeps its answers for the job that resumes it.
        pickle.dump((key, value), self.journal)
        self.journal.flush()

    def get(self, key: str) -> bytes | None:
        value = self.store.get(key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        self.store.set(key, value)
        self._log(key, value)

    def delete(self, key: str) -> None:
        self.store.delete(key)
        self._log(key, None)

    def entries(self) -> int:
        return len(self.store)

    def save(self) -> int:
        """Write the store to the snapshot (a temp file renamed over it: a crash leaves the old one) and remove the
        local copy; the number of entries."""
        import diskcache

        count = len(self.store)
        self.store.close()
        partial = self.snapshot.with_suffix(".tmp")
        with tarfile.open(partial, "w") as tar:
            tar.add(self.local / "store", arcname="store")
        os.replace(partial, self.snapshot)
        self.journal.close()
        for journal in [*self.replayed, self.journal_path]:  # the snapshot holds everything they said
            journal.unlink(missing_ok=True)
        self.replayed = []
        self._open_journal()
        shutil.rmtree(self.local, ignore_errors=True)
        self.store = diskcache.Cache(str(self.local / "store"), size_limit=DISK_LIMIT_BYTES)
        return count


class RemoteStore:
    """The disk tier of a trial's `EndpointCache` when the cluster has a `CacheService`: what DSPy's `Cache` asks
    of its disk cache (get, set, delete, membership), answered by the actor. Writes are sent without waiting: the
    actor takes one caller's calls in order, so a trial reads back what it wrote."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def get(self, key: str) -> Any:
        import ray

        blob = ray.get(self.actor.get.remote(key))
        return None if blob is None else pickle.loads(blob)  # written by this cluster's own trials

    def set(self, key: str, value: Any) -> None:
        self.actor.set.remote(key, pickle.dumps(value))

    def delete(self, key: str) -> None:
        self.actor.delete.remote(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def start_service(snapshot: Path) -> Any:
    """Start the cluster's `CacheService` on this node (the driver's: the head), restored from `snapshot`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0)(CacheService).options(name=SERVICE, scheduling_strategy=here)
    return actor.remote(str(snapshot))


SAVE_TIMEOUT_S = 10.0
"""How long a session's end waits for the snapshot. A job being cancelled has ~30 s (Slurm's KillWait) before
SIGKILL, and the journal already holds every entry: a snapshot that cannot be written in time is not a loss."""


def stop_service(actor: Any, timeout_s: float = SAVE_TIMEOUT_S) -> int:
    """Write the service's store to its snapshot and stop it; the entries saved (0 if the snapshot could not be
    written: the journal keeps them for the next session)."""
    import ray

    try:
        return int(ray.get(actor.save.remote(), timeout=timeout_s))
    except Exception:  # the head going down with the job, or a slow disk: the journal has every entry
        return 0
    finally:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def _service() -> Any:
    """This Ray job's cache service, if the driver started one."""
    try:
        import ray

        return ray.get_actor(SERVICE) if ray.is_initialized() else None
    except (ImportError, ValueError):
        return None


def install(directory: Path | None) -> None:
    """Use the partitioned cache in this process, or no cache at all (None): entries through the cluster's
    `CacheService` when the driver started one, else on disk under `directory`."""
    if directory is None:
        dspy.cache = Cache(enable_disk_cache=False, enable_memory_cache=False, disk_cache_dir=None)
        return
    service = _service()
    if service is not None:
        cache = EndpointCache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None)
        cache.enable_disk_cache, cache.disk_cache = True, RemoteStore(service)
        dspy.cache = cache
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
