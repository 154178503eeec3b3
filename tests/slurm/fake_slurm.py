"""A fake SLURM for deploy/slurm/arb.sbatch: `sbatch`, `srun`, `scontrol`, `scancel` (and `hostname`, `ollama`)
that run a job's "nodes" as processes on this machine, all on 127.0.0.1.

What it keeps of the real thing, because the script depends on it (Slurm's man pages, slurm.schedmd.com):
- sbatch reads `#SBATCH` lines up to the first command and lets command-line options override them; it runs the
  script with bash on the first node of the allocation, with SLURM_JOB_ID, SLURM_JOB_NODELIST (compressed
  hostlist form, `gpu[1-3]`), SLURM_JOB_NUM_NODES, SLURM_SUBMIT_DIR, SLURM_NODEID=0 and SLURMD_NODENAME set, and
  writes its output to `--output` (`%j` = job id) in the submit directory. `--wait` returns the job's exit code.
- srun inside the job starts one task per node (`--nodes`, `--ntasks-per-node=1`), each with its own
  SLURM_NODEID / SLURM_PROCID / SLURMD_NODENAME and the caller's environment (`--export=ALL`, the default), and
  forwards SIGTERM / SIGINT to its tasks; it exits with the highest task exit code.
- `scontrol show hostnames [LIST]` expands a hostlist, one name per line (default: SLURM_JOB_NODELIST).
- `scancel [--batch] [--signal=SIG] JOBID`: with `--batch`, the signal goes to the batch shell only (what
  `#SBATCH --signal=B:TERM@N` does before the time limit); without, SIGTERM to every process of the job, then
  SIGKILL after KillWait (slurm.conf default 30 s; FAKE_SLURM_KILL_WAIT_S here).
What it does not do: queue, allocate resources, enforce limits; every node is this machine.

State (job counter, batch pids) lives in $FAKE_SLURM_STATE; `ollama serve` writes what it served there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PREFIX = "gpu"


def _state() -> Path:
    path = Path(os.environ["FAKE_SLURM_STATE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def expand_hostlist(hostlist: str) -> list[str]:
    """`gpu[1-3,5],login1` → gpu1 gpu2 gpu3 gpu5 login1 (the forms Slurm prints for an allocation)."""
    names: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            names.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi or lo) + 1))
    return names


def _directives(script: Path) -> list[str]:
    out = []
    for line in script.read_text().splitlines()[1:]:
        if line.startswith("#SBATCH"):
            out.extend(line.split()[1:])
        elif line.strip() and not line.startswith("#"):
            break  # sbatch stops reading directives at the first command
    return out


def _options(args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        opts[name] = value
    return opts


def sbatch(argv: list[str]) -> int:
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    cli, script, script_args = argv[:i], Path(argv[i]), argv[i + 1 :]
    opts = {**_options(_directives(script)), **_options(cli)}
    state = _state()
    counter = state / "last-job-id"
    job = int(counter.read_text()) + 1 if counter.exists() else 1001
    counter.write_text(str(job))
    nodes = int(opts.get("nodes", "1"))
    submit = Path.cwd()
    output = submit / opts.get("output", "slurm-%j.out").replace("%j", str(job))
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(job),
        "SLURM_JOBID": str(job),
        "SLURM_JOB_NAME": opts.get("job-name", script.name),
        "SLURM_JOB_NODELIST": f"{PREFIX}[1-{nodes}]" if nodes > 1 else f"{PREFIX}1",
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NNODES": str(nodes),
        "SLURM_SUBMIT_DIR": str(submit),
        "SLURM_NODEID": "0",
        "SLURMD_NODENAME": f"{PREFIX}1",
    }
    with output.open("wb") as out:
        proc = subprocess.Popen(["bash", str(script), *script_args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=submit)  # fmt: skip
    (state / f"{job}.pid").write_text(str(proc.pid))
    print(f"Submitted batch job {job}", flush=True)
    if "wait" not in opts:
        return 0
    code = proc.wait()
    return code if code >= 0 else 128 - code


def scancel(argv: list[str]) -> int:
    opts = _options([a for a in argv if a.startswith("-")])
    job = next(a for a in argv if not a.startswith("-"))
    pid = int((_state() / f"{job}.pid").read_text())
    sig = getattr(signal, "SIG" + opts.get("signal", "TERM").removeprefix("SIG"))
    try:
        if "batch" in opts:
            os.kill(pid, sig)
            return 0
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(os.environ.get("FAKE_SLURM_KILL_WAIT_S", "30"))
        while time.monotonic() < deadline:
            os.killpg(pid, 0)
            time.sleep(0.5)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


def srun(argv: list[str]) -> int:
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    opts, command = _options(argv[:i]), argv[i:]
    hosts = expand_hostlist(os.environ["SLURM_JOB_NODELIST"])
    chosen = expand_hostlist(opts["nodelist"]) if "nodelist" in opts else hosts[: int(opts.get("nodes", len(hosts)))]
    tasks = []
    for rank, host in enumerate(chosen):
        env = {**os.environ, "SLURM_NODEID": str(hosts.index(host)), "SLURM_PROCID": str(rank),
               "SLURMD_NODENAME": host, "SLURM_STEP_NUM_TASKS": str(len(chosen))}  # fmt: skip
        tasks.append(subprocess.Popen(command, env=env))

    def forward(signum: int, _frame: object) -> None:
        for task in tasks:
            if task.poll() is None:
                task.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [task.wait() for task in tasks]
    return max((c if c >= 0 else 128 - c) for c in codes)


def scontrol(argv: list[str]) -> int:
    if argv[:2] != ["show", "hostnames"]:
        print(f"fake scontrol: only `show hostnames` is implemented, not {argv}", file=sys.stderr)
        return 1
    for name in expand_hostlist(argv[2] if len(argv) > 2 else os.environ["SLURM_JOB_NODELIST"]):
        print(name)
    return 0


def hostname(argv: list[str]) -> int:
    # every fake node is this machine's loopback
    print("127.0.0.1 " if "-I" in argv else os.environ.get("SLURMD_NODENAME", "localhost"))
    return 0


def _ollama_url() -> str:
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    return host if host.startswith("http") else f"http://{host}"


def ollama(argv: list[str]) -> int:
    """`ollama serve | list | pull TAG` against the tests' stub (tests/stub_server.py), which starts with no model:
    a trial finds its model only if the node pulled it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    command = argv[0] if argv else ""
    if command == "serve":
        from stub_server import StubServer, table_responder

        delay = float(os.environ.get("FAKE_OLLAMA_CALL_S", "0"))
        inner = table_responder({})

        def respond(model: str, messages: list[dict[str, object]]) -> str:
            time.sleep(delay)
            return inner(model, messages)  # type: ignore[arg-type]

        port = int(_ollama_url().rsplit(":", 1)[1])
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        with StubServer([], respond, port=port) as server:
            print(f"fake ollama serve on {server.url}", flush=True)
            while not stopped:
                time.sleep(0.2)
            report = {"port": port, "node": os.environ.get("SLURMD_NODENAME"), "calls": server.state.calls.total(),
                      "models": list(server.state.models), "env": {k: v for k, v in os.environ.items()
                                                                   if k.startswith("OLLAMA_")}}  # fmt: skip
        job, node = os.environ.get("SLURM_JOB_ID", "0"), os.environ.get("SLURM_NODEID", "0")
        (_state() / f"ollama-{job}-{node}.json").write_text(json.dumps(report))
        return 0
    try:
        if command == "list":
            urllib.request.urlopen(f"{_ollama_url()}/api/tags", timeout=5).read()
            return 0
        if command == "pull":
            body = json.dumps({"model": argv[1], "stream": False}).encode()
            urllib.request.urlopen(urllib.request.Request(f"{_ollama_url()}/api/pull", data=body), timeout=30).read()
            print("success")
            return 0
    except (urllib.error.URLError, OSError):
        print("Error: could not connect to ollama app, is it running?", file=sys.stderr)
        return 1
    print(f"fake ollama: {command!r} is not implemented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    tools = {"sbatch": sbatch, "srun": srun, "scontrol": scontrol, "scancel": scancel, "hostname": hostname,
             "ollama": ollama}  # fmt: skip
    sys.exit(tools[sys.argv[1]](sys.argv[2:]))
