"""Real servers for the tests that need them: PostgreSQL (Debian's) and an MLflow tracking server on top of it,
the same kind of store that cluster.yaml sets up on the head node. Everything binds to 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(*, passwords: bool = False) -> Iterator[str]:
    """A throwaway PostgreSQL cluster with a `mlflow` database; yields its SQLAlchemy URI.

    With `passwords`, TCP logins need a password (as on the cluster's head) and the URI is the superuser's over the
    Unix socket, for setting up roles."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    # Its own directory in /tmp: pytest's tmp_path sits under a root-only directory the postgres user cannot enter.
    workdir = Path(tempfile.mkdtemp(prefix="arb-pg-"))
    data, port = workdir / "pgdata", free_port()
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True, "timeout": 120}
    auth = ["--auth-local=trust", "--auth-host=scram-sha-256"] if passwords else ["--auth=trust"]
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), *auth, "-U", "postgres"]), **quiet)
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
    log = workdir / "postgres.log"
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w",
                                 "start"]), **quiet)  # fmt: skip
    try:
        subprocess.run(
            _as_postgres([str(bindir.parent / "bin" / "createdb"), "-h", str(workdir), "-p", str(port), "-U",
                          "postgres", "mlflow"]), **quiet)  # fmt: skip
        if passwords:
            yield f"postgresql://postgres@/mlflow?host={workdir}&port={port}"
        else:
            yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)


NO_SERVER_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""As every server arb starts (deploy/slurm, cluster.yaml, deploy/kuberay, `arb ui`): without it MLflow 3.17's server
starts a job runner with seven huey consumers (mlflow/server/__init__.py), ~33 CPU-s and ~1.2 GB per start here."""


class MlflowServer:
    """`mlflow server` on a PostgreSQL store; can be stopped and started again on the same port (outage tests)."""

    def __init__(
        self, backend_uri: str, artifacts: Path, log: Path, *, args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.backend_uri, self.artifacts, self.log = backend_uri, artifacts, log
        self.args, self.env = args or [], env
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
                 "--backend-store-uri", self.backend_uri, "--artifacts-destination", self.artifacts.as_uri(),
                 *self.args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **NO_SERVER_JOBS, **(self.env or {})},
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self.proc = None


@contextmanager
def mlflow_on_postgres(workdir: Path) -> Iterator[MlflowServer]:
    with postgres() as backend:
        server = MlflowServer(backend, workdir / "artifacts", workdir / "mlflow-server.log")
        server.start()
        try:
            yield server
        finally:
            server.stop()


RAY = str(Path(sys.executable).with_name("ray"))
# A throwaway cluster on loopback without Ray's token auth; tests/integration/test_cluster.py runs with a token,
# as clusters do.
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
# Ray 2.60's `ray start --block` drains its node for up to 30 s on SIGTERM (for Ray Serve replicas; ray/_private/
# node.py, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S): no Serve here, so `stop` below would only wait it out.
# deploy/slurm/arb-node.sh sets the same.
NO_DRAIN = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def ray_node(args: list[str], log: Path, ray_env: dict[str, str] = RAY_ENV) -> subprocess.Popen[bytes]:
    # `--block` keeps `ray start` in the foreground owning its node's processes, so the test can stop exactly
    # this node (never `ray stop`, which would stop every Ray on the machine).
    with log.open("ab") as out:
        return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **NO_DRAIN, **ray_env})  # fmt: skip


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_nodes(address: str, count: int, timeout_s: float = 180.0, ray_env: dict[str, str] = RAY_ENV) -> None:
    """Until `count` nodes are alive, with what deploy/slurm waits with (`python -m grid.wait_nodes`); tried again
    while the head does not answer yet."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        wait = [sys.executable, "-m", "grid.wait_nodes", address, str(count), "--timeout", f"{left:.0f}"]
        out = subprocess.run(wait, capture_output=True, text=True, timeout=left + 120, env={**os.environ, **ray_env})
        if out.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes")
