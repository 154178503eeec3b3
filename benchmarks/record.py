"""Where every benchmark writes its result: a section of BENCHMARKS.md, with the command, the machine and the date."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def heading() -> list[str]:
    """The entry's first lines: date, exact command, machine."""
    return [
        "",
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — `{' '.join(['python', *sys.argv])}`",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {len(os.sched_getaffinity(0))} cores.",
    ]


def append(section: str, lines: list[str]) -> None:
    """Print the entry and append it under `## {section}` (created on first use)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if f"## {section}" not in BENCHMARKS_MD.read_text():
        text = f"\n## {section}\n" + text
    with BENCHMARKS_MD.open("a") as f:
        f.write(text)
