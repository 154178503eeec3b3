"""What a sweep (`arb run`) and a race (`arb route`) both need around their Ray work: the embedded model servers, the
`Runtime` their tasks receive, `ARB_HOME` made absolute for a local cluster, the Ray connection with the trial's
imports preloaded, and its shutdown; a server that died for good is raised once Ray is down."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grid.embedded import DEFAULT_PORT, EmbeddedServers, serve_embedded
from grid.signals import stop_on_sigterm
from trainables.errors import ArbError
from trainables.registry import ModelRegistry

CLUSTER_CACHE = "lm-cluster.tar"
"""The cluster's LM cache between sessions, in `$ARB_HOME/cache` (one file, written whole)."""

PRELOAD = ("trainables.trial",)
"""Modules a local Ray worker imports before it is handed a trial (what `run_trial` needs). Cluster nodes also
preload `datasets` (cluster.yaml), which a trial's data step would otherwise import itself (1.3 s and 134 MB,
BENCHMARKS.md "Data step at full size"); on one 2-core machine the extra import at every worker start cost more
than it saved (a local Ray test grid: 49 s with it, 42 s without)."""


@dataclass
class Session:
    """An open session: where Ray runs (`local` or the cluster's address), the embedded servers, the runtime."""

    address: str
    servers: EmbeddedServers
    runtime: Any
    """`trainables.context.Runtime` (imported with Ray, not before: `arb --help` stays fast)."""


@contextmanager
def session(
    used: list[str], registry: ModelRegistry, tracking_uri: str, home: Path, *, registry_path: str | None = None,
    experiment_id: str = "", embedded_port: int = DEFAULT_PORT, stream: Any = sys.stderr,
) -> Iterator[Session]:  # fmt: skip
    """Serve the embedded models among `used`, connect Ray, and yield the session; on exit, Ray is shut down and
    the servers stopped."""
    from trainables.context import Runtime
    from trainables.lm import cache as lm_cache

    with serve_embedded(used, registry, home / "logs", base_port=embedded_port, stream=stream) as servers:
        for name, url in servers.endpoints.items():
            speed = servers.speeds[name]
            print(
                f"embedded model {name} at {url}: {speed.prompt_tok_s:.0f} prompt tok/s, "
                f"{speed.generate_tok_s:.1f} generated tok/s, per-call timeout {servers.timeouts[name]:.0f} s",
                file=stream,
                flush=True,
            )
        runtime = Runtime(tracking_uri=tracking_uri, experiment_id=experiment_id, registry_path=registry_path,
                          registry=registry.model_dump(), endpoints=servers.endpoints, timeouts=servers.timeouts,
                          versions=servers.versions)  # fmt: skip
        address = os.environ.get("RAY_ADDRESS") or "local"
        if address == "local":
            # Ray runs each task in its own working directory: a relative ARB_HOME (the default `./arb-results`)
            # would put the node's LM cache and optimizer state in there, fresh for every task and lost on retry.
            # Cluster nodes set their own ARB_HOME (cluster.yaml).
            os.environ["ARB_HOME"] = str(Path(home).resolve())
        import ray

        connect_ray(
            # Without RAY_ADDRESS, a fresh local instance: ray.init() alone would try to join whatever cluster
            # /tmp/ray/ray_current_cluster last named, even a dead one. On a cluster head, set RAY_ADDRESS=auto.
            address,
            configure_logging=True,
            logging_level=logging.ERROR,
            # A local instance starts its workers with the trial's imports done (DSPy, LiteLLM, MLflow: seconds
            # each) while the driver is still setting up; cluster nodes get the same from
            # RAY_preload_python_modules in cluster.yaml.
            _system_config={"preload_python_modules": list(PRELOAD)} if address == "local" else None,
        )
        # On a cluster the LM cache is one service on the head, not SQLite on the shared ARB_HOME
        # (`trainables.lm.cache`).
        cache = lm_cache.start_service(Path(home) / "cache" / CLUSTER_CACHE) if address != "local" else None
        try:
            yield Session(address, servers, runtime)
        finally:
            try:
                if cache is not None:
                    lm_cache.stop_service(cache)
            finally:
                ray.shutdown()
    if servers.failure is not None:
        raise servers.failure


def connect_ray(address: str, **options: Any) -> None:
    """`ray.init` for the driver; a cluster that refuses this client (Ray token authentication: no token, or not
    the cluster's) or does not answer is one error line that says where the token lives, not a traceback."""
    import ray
    from ray.exceptions import AuthenticationError

    token_fix = (
        "a cluster started by cluster.yaml, deploy/slurm or deploy/kuberay requires Ray's token: set "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file (on the cluster.yaml head: "
        "`set -a; . ~/.arb/cluster/ray.env; set +a`), or RAY_AUTH_TOKEN to the token itself"
    )
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **options)
        stop_on_sigterm()
    except AuthenticationError:
        problem = f"the Ray cluster at {address} requires a token and this client has none"
        raise ArbError(problem, token_fix) from None
    except ConnectionError as exc:
        if address == "local":
            raise
        # Ray says only "Failed to connect" both when the cluster is down and when it refused the token.
        problem = f"could not connect to the Ray cluster at {address} ({exc}): it is not running, or it refused this "
        raise ArbError(problem + "client's token", f"check `ray status` on the head; {token_fix}") from None
