"""Slots lent to running trials: how many requests a trial may have in flight at its model server right now.

The driver's searcher decides (`grid.placement`: a node's slot that no waiting trial can use is lent to the trials
running there) and writes every change to a small Ray actor, the board; a trial reads its allowance from it while
it evaluates, at most once per `POLL_S`. Outside a Ray sweep (tests, scripts) there is no board and the allowance
is what the trial was started with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

BOARD = "arb-slot-board"
POLL_S = 1.0
MAX_GATE_S = 12 * 3600.0
"""A trial waiting for its node's model switch gives up waiting after this (a lost driver cannot hold it forever)."""


class SlotBoard:
    """The grants of the running trials on Ollama nodes (Tune trial id → requests in flight); a trial not listed
    keeps what it was started with (an API or embedded model's `in_flight`), a trial with 0 waits for its node's
    model switch before sending anything."""

    def __init__(self) -> None:
        self.grants: dict[str, int] = {}

    def set(self, grants: dict[str, int]) -> None:
        self.grants = grants

    def get(self, slot_id: str, default: int = 1) -> int:
        return self.grants.get(slot_id, default)


def start_board() -> Any:
    """The board as a Ray actor of this job (no CPU reserved: it only answers lookups)."""
    import ray

    return ray.remote(num_cpus=0)(SlotBoard).options(name=BOARD).remote()


def allowance(slot_id: str | None, default: int = 1) -> Callable[[], int] | None:
    """A function giving the current allowance of trial `slot_id` (cached for `POLL_S`; `default` while the board
    cannot be reached), or None when there is no board to ask (the trial keeps `default`)."""
    import ray

    board = None
    if slot_id:
        try:
            if ray.is_initialized():
                board = ray.get_actor(BOARD)
        except ValueError:  # no board in this job: a trial run outside a sweep
            board = None
    if board is None:
        return None
    value, asked = default, 0.0

    def current() -> int:
        nonlocal value, asked
        if time.monotonic() - asked >= POLL_S:
            asked = time.monotonic()
            try:
                got: Any = ray.get(board.get.remote(slot_id, default), timeout=5)
                value = max(0, int(got))
            except Exception as exc:  # a lost board must not fail the trial: it keeps its own slot
                log.debug("slot board unavailable: %s", exc)
                value = default
        return value

    return current


def wait_turn(allowance: Callable[[], int] | None) -> None:
    """Return once `allowance` is at least 1: a trial placed ahead of its node's model switch waits here."""
    if allowance is None:
        return
    deadline = time.monotonic() + MAX_GATE_S
    while allowance() < 1 and time.monotonic() < deadline:
        time.sleep(POLL_S / 4)
