"""The install is pinned and hash-checked: requirements.lock holds, for exactly the versions constraints.txt pins,
the sha256 of every file PyPI serves for them; `make install` installs in pip's hash-checking mode, so a changed
artifact fails the install; and no pin is a release known to be compromised."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Releases withdrawn after their PyPI uploads carried credential-stealing code (BerriAI/litellm issue 24518, 2026).
COMPROMISED = {"litellm": {"1.82.7", "1.82.8"}}


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()  # PEP 503 normalisation


def pins(path: Path) -> dict[str, str]:
    return {_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", path.read_text(), re.M)}


def hashed(path: Path) -> dict[str, list[str]]:
    """Each locked requirement and its sha256 hashes."""
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        if m := re.match(r"([A-Za-z0-9_.-]+)==", block):
            out[_name(m[1])] = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
    return out


def compromised(pinned: dict[str, str]) -> list[str]:
    return [f"{name}=={v}" for name, v in pinned.items() if v in COMPROMISED.get(name, set())]


def test_the_locks_hold_exactly_the_pinned_versions_each_with_hashes() -> None:
    constraints = pins(ROOT / "constraints.txt")
    locked = {**pins(ROOT / "requirements.lock"), **pins(ROOT / "scripts/llama-cpp.lock")}
    hashes = {**hashed(ROOT / "requirements.lock"), **hashed(ROOT / "scripts/llama-cpp.lock")}
    # tzdata is pinned for platforms where pandas needs it; Linux takes the system's zoneinfo
    assert {n: v for n, v in constraints.items() if n != "tzdata"} == locked, "run scripts/lock.sh"
    assert all(hashes[name] for name in locked), [n for n in locked if not hashes[n]]


def test_no_pin_is_a_known_compromised_release() -> None:
    for lock in ("constraints.txt", "requirements.lock"):
        assert not compromised(pins(ROOT / lock)), lock
    assert compromised({"litellm": "1.82.8", "dspy": "3.4.1"}) == ["litellm==1.82.8"]  # the check can fail


def test_the_install_checks_every_hash() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in makefile and "pip check" in makefile
    assert "--require-hashes" in (ROOT / "scripts/install-llama-cpp.sh").read_text()


@pytest.mark.parametrize("tampered", [False, True])
def test_pip_refuses_an_artifact_whose_hash_changed(tmp_path: Path, tampered: bool) -> None:
    """What the hash-checking mode buys, shown on a local wheel: the same name and version with other content
    (a re-uploaded or hijacked release) is refused before anything is installed."""
    wheel = tmp_path / "dist" / "arbprobe-1.0-py3-none-any.whl"
    wheel.parent.mkdir()

    def build(code: str) -> None:
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("arbprobe.py", code)
            z.writestr("arbprobe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: arbprobe\nVersion: 1.0\n")
            z.writestr("arbprobe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                       "Tag: py3-none-any\n")  # fmt: skip
            z.writestr("arbprobe-1.0.dist-info/RECORD", "")

    build("VALUE = 1\n")
    digest = subprocess.run([sys.executable, "-m", "pip", "hash", str(wheel)], capture_output=True, text=True,
                            check=True).stdout.split("--hash=sha256:")[1].strip()  # fmt: skip
    if tampered:
        build("import os  # something else under the same name and version\n")
    (tmp_path / "lock.txt").write_text(f"arbprobe==1.0 --hash=sha256:{digest}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(wheel.parent),
         "--require-hashes", "--no-deps", "-r", str(tmp_path / "lock.txt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if tampered:
        assert proc.returncode != 0 and "DO NOT MATCH THE HASHES" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
