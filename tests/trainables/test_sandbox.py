"""The sandbox for model-written code: HumanEval's canonical solutions pass, broken ones fail, and hostile code is
contained within its limit plus a margin, with nothing left running."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainables.errors import ArbError
from trainables.tasks import sandbox
from trainables.tasks.code import humaneval_example, humaneval_problems, passes
from trainables.tasks.sandbox import Limits, run_python

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

LIMITS = Limits(wall_seconds=3, cpu_seconds=2, memory_mb=256, processes=16)
MARGIN_S = 3.0  # process start-up and teardown on a loaded 2-core machine


def _leftovers() -> list[str]:
    """Sandbox processes left by this test process: its descendants, or orphans (a sandbox whose parent died is
    reparented to init). Another pytest-xdist worker's sandboxes, alive while its tests run, are neither."""
    # exactly the sandbox's own command lines (prlimit … bwrap --unshare-all … python -I -B main.py)
    pattern = r"bwrap --unshare-all|-I -B main\.py"
    out = subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True).stdout
    found = {int(line.split()[0]): line for line in out.splitlines() if "pgrep" not in line}
    return [line for pid, line in found.items() if _left_by_me(pid, set(found))]


def _left_by_me(pid: int, sandboxed: set[int]) -> bool:
    me = os.getpid()
    for _ in range(64):  # a process tree is never this deep; bounded anyway
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False  # it has exited meanwhile
        if parent == me or (parent == 1 and pid in sandboxed):
            return True
        if parent <= 1:
            return False
        pid = parent
    return False


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    assert _leftovers() == []


def test_all_164_canonical_humaneval_solutions_pass_and_broken_ones_fail() -> None:
    examples = [humaneval_example(p) for p in humaneval_problems("hub")]
    assert len(examples) == 164
    with ThreadPoolExecutor(2) as pool:
        canonical = list(pool.map(lambda e: passes(e.code, e), examples))
        broken = list(pool.map(lambda e: passes(e.preamble + "    return None\n", e), examples))
    assert sum(canonical) == 164, [e.id for e, ok in zip(examples, canonical, strict=True) if not ok]
    assert sum(broken) == 0, [e.id for e, ok in zip(examples, broken, strict=True) if ok]


HOSTILE = {
    "infinite loop": "while True:\n    pass\n",
    "loop catching BaseException": (
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    ),
    "memory bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_is_contained(name: str) -> None:
    outcome = run_python(HOSTILE[name], limits=LIMITS)
    assert not outcome.passed
    assert outcome.seconds < LIMITS.wall_seconds + MARGIN_S


def test_fork_bomb_cannot_exceed_the_process_cap() -> None:
    source = (
        "import os, time\nkids = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    kids += 1\nprint(kids, flush=True)\nos._exit(0)\n"
    )
    outcome = run_python(source, limits=LIMITS)
    assert outcome.passed, outcome.stderr
    assert int(outcome.stdout.split()[0]) < LIMITS.processes + 1


def test_write_outside_the_temp_directory_fails(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(str(tmp_path), "escaped.txt")
    outcome = run_python(f"open({target!r}, 'w').write('x')\n", limits=LIMITS)
    assert not outcome.passed
    assert not os.path.exists(target)
    inside = run_python("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\n", limits=LIMITS)
    assert inside.passed and inside.stdout.strip() == "ok"


def test_no_network_even_to_a_listener_on_localhost() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(LIMITS.wall_seconds + 1)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(listener)))
    thread.start()
    outcome = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", limits=LIMITS)
    thread.join()
    listener.close()
    assert not outcome.passed
    assert accepted == [None]


def _accept(listener: socket.socket) -> object:
    try:
        return listener.accept()
    except TimeoutError:
        return None


CANARY = "sk-CANARY-sandbox-0123456789"
SNOOP = f"""
import gc, glob, os, sys
found = []
found += [k for k, v in os.environ.items() if {CANARY!r} in v]
for path in glob.glob('/proc/*/environ'):
    try:
        if {CANARY!r}.encode() in open(path, 'rb').read():
            found.append(path)
    except OSError:
        pass
frame = sys._getframe()
while frame is not None:  # escaping via frame inspection: walk up to whoever called us
    if {CANARY!r} in repr(frame.f_globals) or {CANARY!r} in repr(frame.f_locals):
        found.append('frame')
    frame = frame.f_back
found += ['gc' for o in gc.get_objects() if isinstance(o, str) and {CANARY!r} in o and o is not {CANARY!r}]
print('searched', len(found), found)
"""


def test_planted_key_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    outcome = run_python(SNOOP, limits=LIMITS)
    assert outcome.passed, outcome.stderr
    assert outcome.stdout.split()[:2] == ["searched", "0"], outcome.stdout


def test_only_the_sandbox_filesystem_is_visible() -> None:
    outcome = run_python("import os\nprint(sorted(os.listdir('/')))\nprint(os.path.exists('/root'))\n", limits=LIMITS)
    assert outcome.passed, outcome.stderr
    assert "work" not in outcome.stdout and "home" not in outcome.stdout and "False" in outcome.stdout


def test_missing_bubblewrap_is_a_clear_error_and_rlimits_mode_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(ArbError) as err:
        run_python("print(1)", mode="bubblewrap")
    assert "bubblewrap" in err.value.problem and "sandbox: rlimits" in err.value.fix
    with pytest.raises(ArbError):
        sandbox.check("bubblewrap")
    weak = run_python("import os\nprint(len(os.environ))\nwhile True: pass\n", mode="rlimits", limits=LIMITS)
    assert not weak.passed and weak.seconds < LIMITS.wall_seconds + MARGIN_S


def test_set_mode_rejects_unknown_modes() -> None:
    with pytest.raises(ArbError):
        sandbox.set_mode("docker")  # type: ignore[arg-type]
    sandbox.check()  # the default mode works on this machine
