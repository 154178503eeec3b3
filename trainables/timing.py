"""Where a trial's wall time goes, phase by phase (what the driver's progress and the cluster benchmark read), and
its pace: requests in flight and the MLflow writes that run in the background.

A trial reports these to Ray Tune with its metrics (`time_*` keys, seconds), not to MLflow: they describe how the
sweep ran (a warm or cold worker, a busy store), not the result. `time_worker_start` is non-zero only for the first
trial a worker process runs: the process's start, Ray's worker boot and the imports of DSPy, LiteLLM and MLflow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_first_trial_done = False


def process_start() -> float | None:
    """This process's start as a Unix time (Linux /proc), or None where that is not available."""
    try:
        stat = Path(f"/proc/{os.getpid()}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after the (command) field
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class Phases:
    """Seconds per named phase of one trial, plus the process's CPU seconds over the trial."""

    def __init__(self, suggested_at: float | None = None) -> None:
        global _first_trial_done
        self.started_at = time.time()
        self._cpu0 = time.process_time()
        self.seconds: dict[str, float] = {}
        boot = None if _first_trial_done else process_start()
        _first_trial_done = True
        # /proc's start time has a resolution of one clock tick (10 ms), against a boot of seconds
        self.seconds["worker_start"] = max(0.0, self.started_at - boot) if boot is not None else 0.0
        if suggested_at is not None:
            # from the searcher's hand-out to this trial's start, less what a new worker process took to boot
            waited = self.started_at - suggested_at - self.seconds["worker_start"]
            self.seconds["wait"] = max(0.0, waited)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def report(self) -> dict[str, float]:
        """`time_<phase>` for every phase, `time_cpu` (this process's CPU, all threads) and the trial's start and
        end as Unix times (`started_at`, `ended_at`)."""
        out = {f"time_{name}": round(s, 4) for name, s in self.seconds.items()}
        out["time_cpu"] = round(time.process_time() - self._cpu0, 4)
        out["started_at"] = self.started_at
        out["ended_at"] = time.time()
        return out


@dataclass(frozen=True)
class Pace:
    """How a trial runs, not what it computes: requests it may have in flight, where its time goes, and the
    writes to MLflow that run in the background while the trial goes on (joined before the result is committed)."""

    concurrency: int
    """Requests in flight the trial was started with (its share of its node's slots)."""
    phases: Phases
    allowance: Callable[[], int] | None = None
    """The live share (slots lent by the driver while nothing else can use them: `trainables.lm.slots`), if any."""
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="arb-publish")
    )
    pending: list[Future[dict[str, str] | None]] = field(default_factory=list)

    def later(self, write: Callable[[], dict[str, str] | None]) -> None:
        """Run `write` (an MLflow write with an explicit run id; it may return tags for the run) in the background."""
        self.pending.append(self.pool.submit(write))

    def settle(self) -> dict[str, str]:
        """Wait for every background write; the tags they returned. The first failure is raised."""
        try:
            tags: dict[str, str] = {}
            for future in self.pending:
                tags.update(future.result() or {})
            return tags
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the background writes without looking at their outcome (the trial failed anyway)."""
        self.pool.shutdown(wait=True)

    @property
    def limit(self) -> int | Callable[[], int]:
        return self.allowance or self.concurrency

    def now(self) -> int:
        return max(1, self.allowance()) if self.allowance is not None else self.concurrency
