"""Runs model-written Python in a separate, locked-down process.

Default mode `bubblewrap`: the program runs under `bwrap` with no network, a read-only view of the interpreter and
system libraries only (no home directories, no project files), a private temp directory as the only writable place,
its own PID namespace (it cannot see or signal other processes) and dies with its parent. Around it, `prlimit` caps
CPU time, address space, process count and file size; the environment is empty; a wall-clock timeout kills the
whole process group. When the harness runs as root, the sandbox drops to `nobody` first, because the kernel never
applies the process limit to root.

Mode `rlimits` is the weaker opt-in for machines without bubblewrap: the same limits, empty environment, temp
directory and timeout, but no namespaces, so the code can read the file system and reach the network. Trials
record which mode they used (MLflow tag `arb.sandbox`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.errors import ArbError

SandboxMode = Literal["bubblewrap", "rlimits"]
MODES: tuple[SandboxMode, ...] = ("bubblewrap", "rlimits")
NOBODY = 65534
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


@dataclass(frozen=True)
class Limits:
    """Resource caps for one execution. Defaults fit HumanEval/MBPP checks with a wide margin."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    processes: int = 32
    """Processes beyond the ones the sandbox user already runs (for root: the `nobody` user)."""
    file_mb: int = 16


@dataclass(frozen=True)
class Outcome:
    """What happened to one execution."""

    passed: bool
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """A one-word failure class for per-example records ("" when passed)."""
        if self.passed:
            return ""
        if self.timed_out:
            return "timeout"
        if self.returncode is not None and self.returncode < 0:
            return f"signal {-self.returncode}"
        last = self.stderr.strip().splitlines()[-1:] or [""]
        return last[0].split(":")[0][:60] or f"exit {self.returncode}"

    @property
    def reason(self) -> str:
        """Why the execution failed, in words a model can act on: the end of the traceback (for a failed `assert`
        the failing line, then `AssertionError`), a timeout or a signal ("" when passed)."""
        if self.passed:
            return ""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s (an endless loop, or far too slow)"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode} (memory or process limit)"
        tail = [line.strip() for line in self.stderr.strip().splitlines()[-3:] if line.strip()]
        return " / ".join(tail)[-400:] or f"exit code {self.returncode}"


_mode: SandboxMode = "bubblewrap"


def set_mode(mode: SandboxMode) -> None:
    """Select the mode for this process's code executions (the trial does this from its grid file)."""
    if mode not in MODES:
        raise ArbError(f"unknown sandbox mode {mode!r}", f"use one of: {', '.join(MODES)}")
    global _mode
    _mode = mode


def interpreter() -> str:
    """A Python the sandbox user can read: this one's base installation if world-readable, else the system's."""
    candidates = [Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"]
    candidates += [Path(p) for p in ("/usr/bin/python3", "/usr/local/bin/python3")]
    for path in candidates:
        if path.exists() and (os.geteuid() != 0 or _world_readable(path)):
            return str(path)
    raise ArbError(
        "no Python interpreter the sandbox user can read (this one lives in a private directory)",
        "install the system python3 (apt-get install python3) or set ARB_SANDBOX_PYTHON",
    )


def _world_readable(path: Path) -> bool:
    # `nobody` must be able to traverse every parent directory and read the binary.
    real = path.resolve()
    return all(os.stat(p).st_mode & 0o001 for p in real.parents) and bool(os.stat(real).st_mode & 0o004)


def check(mode: SandboxMode | None = None) -> None:
    """Fail early, with the fix, if the selected mode cannot run here (called before a sweep starts)."""
    mode = mode or _mode
    outcome = run_python("print('ok')", mode=mode, limits=Limits(wall_seconds=30))
    if not outcome.passed or outcome.stdout.strip() != "ok":
        hint = (
            "install bubblewrap (apt-get install bubblewrap) and allow user namespaces, "
            "or opt in to the weaker mode with `sandbox: rlimits` in the grid file"
            if mode == "bubblewrap"
            else "check that prlimit (util-linux) and python3 are installed"
        )
        raise ArbError(f"the {mode} sandbox cannot run code here: {outcome.stderr.strip()[-300:]}", hint)


def run_python(
    source: str, *, mode: SandboxMode | None = None, limits: Limits | None = None, stdin: str = ""
) -> Outcome:
    """Execute `source` as a script in the sandbox; passed means exit code 0 within the limits."""
    mode = mode or _mode
    limits = limits or Limits()
    python = os.environ.get("ARB_SANDBOX_PYTHON") or interpreter()
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="arb-sandbox-") as work:
        script = Path(work) / "main.py"
        script.write_text(source)
        if as_root:
            os.chown(work, NOBODY, NOBODY)
            os.chown(script, NOBODY, NOBODY)
        inner = [python, "-I", "-B", "main.py"]
        if mode == "bubblewrap":
            inner = _bwrap(work, python) + inner
        elif mode != "rlimits":
            raise ArbError(f"unknown sandbox mode {mode!r}", f"use one of: {', '.join(MODES)}")
        command = [*_prlimit(limits, NOBODY if as_root else os.getuid()), *inner]
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env={"PATH": "/usr/bin:/bin", "HOME": work, "PYTHONHASHSEED": "0"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
                user=NOBODY if as_root else None,
                group=NOBODY if as_root else None,
                extra_groups=[] if as_root else None,
            )
        except FileNotFoundError as exc:
            raise ArbError(f"cannot start the sandbox: {exc.filename} not found", _install_hint(mode)) from None
        timed_out = False
        try:
            out, err = proc.communicate(stdin, timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:  # the harness itself was interrupted
                _kill_group(proc)
        seconds = time.perf_counter() - start
    return Outcome(
        passed=proc.returncode == 0 and not timed_out,
        returncode=proc.returncode,
        timed_out=timed_out,
        seconds=seconds,
        stdout=out[-4000:],
        stderr=err[-4000:],
    )


def _bwrap(work: str, python: str) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ArbError("bubblewrap (bwrap) is not installed, so generated code cannot be sandboxed", _install_hint())
    binds: list[str] = []
    for d in (*_SYSTEM_DIRS, str(Path(python).resolve().parents[1])):
        if os.path.islink(d):
            binds += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d) and d not in binds:
            binds += ["--ro-bind", d, d]
    return [
        bwrap,
        "--unshare-all",  # network, PID, IPC, UTS, cgroup and user namespaces
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/sandbox",
        *binds,
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--bind", work, "/sandbox",
        "--chdir", "/sandbox",
    ]  # fmt: skip


def _prlimit(limits: Limits, uid: int) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise ArbError("prlimit is not installed, so generated code cannot be resource-limited", _install_hint())
    nproc = _tasks_of(uid) + limits.processes
    mb = 1024 * 1024
    return [
        prlimit,
        f"--cpu={limits.cpu_seconds}",
        f"--as={limits.memory_mb * mb}",
        f"--nproc={nproc}",
        f"--fsize={limits.file_mb * mb}",
        "--core=0",
        "--",
    ]


def _tasks_of(uid: int) -> int:
    """Threads the user already runs: RLIMIT_NPROC counts all of them, so the cap must sit above this number."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the process ended while we looked
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # bwrap's PID namespace dies with bwrap; in rlimits mode the whole group must go.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _install_hint(mode: SandboxMode | None = None) -> str:
    if mode == "rlimits":
        return "install util-linux (prlimit) and python3"
    return (
        "install it (apt-get install bubblewrap), or opt in to the weaker mode with `sandbox: rlimits` "
        "in the grid file (recorded in MLflow)"
    )
