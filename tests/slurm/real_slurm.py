"""A real Slurm on 127.0.0.1 for the tests: Debian's slurm-wlm (slurmctld, one slurmd per node, all on this host)
and munge, with every file in one directory, submitting as an unprivileged user.

What a one-host cluster needs, and why (slurm.conf(5), gres.conf(5), munged(8) of slurm-wlm 22.05 / munge 0.5):
- several slurmd on one host: one `NodeName` line each with its own `Port`, `slurmd -N <name>`; `%n` in the spool,
  pid and log paths keeps their files apart (Debian builds slurm with multiple-slurmd support);
- `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none`: cgroups are not delegated inside a container;
- a GPU GRES needs a device file: `File=/dev/null` (a count-only GPU is refused by slurmd), so `--gpus-per-node=1`
  is scheduled as on a GPU site;
- `SlurmdParameters=config_overrides`: the nodes declare the CPUs and memory of a GPU node, not this machine's;
- munged with its own key, socket, pid and seed files (`AuthInfo=socket=`), so a host's own munge is untouched.
Needs root (slurmd starts each job as its user); `available()` says why when it cannot run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

USER = "arb-slurm-ci"
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sacct", "munged")


def available() -> str | None:
    """None when a real Slurm can run here, else why not (and how to get it)."""
    missing = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if missing:
        return f"no {', '.join(missing)}: apt-get install slurm-wlm munge (scripts/debian-packages.sh test)"
    if os.geteuid() != 0:
        return "a real Slurm needs root here (slurmd starts each job as its submitting user)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def ensure_user() -> pwd.struct_passwd:
    """The unprivileged user jobs are submitted as (created once, with a home for its caches)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True, timeout=60)
        return pwd.getpwnam(USER)


def grant_traverse(paths: list[Path], user: str) -> list[Path]:
    """Let `user` reach `paths` (the repository, the virtualenv's interpreter) through directories that shut
    others out (e.g. /root, 0700, holding pyenv's Python): an ACL entry for that user alone, `--x`. Returns the
    directories changed, for `revoke_traverse`."""
    changed: list[Path] = []
    for path in paths:
        for directory in [*reversed(path.resolve().parents)]:
            if directory.stat().st_mode & 0o001:
                continue
            subprocess.run(["setfacl", "-m", f"u:{user}:x", str(directory)], check=True, timeout=30)
            changed.append(directory)
    return changed


def revoke_traverse(directories: list[Path], user: str) -> None:
    for directory in directories:
        subprocess.run(["setfacl", "-x", f"u:{user}", str(directory)], check=False, timeout=30)


class RealSlurm:
    """`with RealSlurm(directory, nodes=3) as slurm:` a cluster `n1..nN` whose commands run with `slurm.env`."""

    def __init__(self, directory: Path, nodes: int = 3, cpus: int = 8, mem_mb: int = 16000) -> None:
        self.dir, self.nodes, self.cpus, self.mem_mb = directory, nodes, cpus, mem_mb
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conf = directory / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("state", "log", "munge", *(f"spool/{name}" for name in self.names())):
            (d / sub).mkdir(parents=True, exist_ok=True)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (d / "munge").chmod(0o711)  # clients (the unprivileged user) reach the socket, not the key
        host = socket.gethostname()
        node_lines = "\n".join(
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={self.cpus} "
            f"RealMemory={self.mem_mb} Gres=gpu:1 State=UNKNOWN"
            for name in self.names()
        )
        nodes = f"n[1-{self.nodes}]"
        self.conf.write_text(
            f"""ClusterName=arbtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=30
MinJobAge=600
{node_lines}
PartitionName=gpu Nodes={nodes} Default=YES MaxTime=30 State=UP
"""
        )
        (d / "gres.conf").write_text(f"NodeName={nodes} Name=gpu File=/dev/null\n")
        for path in (d, d / "log"):
            path.chmod(0o755)
        self.conf.chmod(0o644)

    def _spawn(self, args: list[str], log: str) -> None:
        out = (self.dir / "log" / log).open("wb")
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True))  # fmt: skip

    def __enter__(self) -> RealSlurm:
        self._write_config()
        d = self.dir / "munge"
        self._spawn([_sbin("munged"), "--foreground", "--force", f"--socket={d}/munge.sock",
                     f"--key-file={d}/munge.key", f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed",
                     f"--log-file={d}/munged.log"], "munged.out")  # fmt: skip
        self._wait(lambda: (d / "munge.sock").exists(), "munged")
        self._spawn([_sbin("slurmctld"), "-D", "-i"], "slurmctld.out")
        for name in self.names():
            self._spawn([_sbin("slurmd"), "-D", "-N", name], f"slurmd-{name}.out")
        self._wait(self._all_idle, "every node idle")
        return self

    def _all_idle(self) -> bool:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return len(states) == self.nodes and all(s == "idle" for s in states.values())

    def _wait(self, ready: object, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} waiting for {what}: "
                                       f"{self.logs()}")  # fmt: skip
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {timeout_s} s: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.dir / "log").iterdir()))  # fmt: skip

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
