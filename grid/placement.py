"""Model-aware placement of trials on Ollama nodes: a Ray Tune searcher that decides which trial runs next, and where.

Ollama loads a model into GPU memory before it can serve it; a node that switches models back and forth spends
its time loading. Ray alone would put each trial on whichever node has a free slot. Here the searcher hands out
trials one at a time, each pinned (by Ray's `ray.io/node-id` label) to a node with a free slot, choosing for that
node, in order:

1. a model the node already holds (no load);
2. a model no live node holds yet (one load, which every model needs once);
3. a model another node is serving, only if enough of it is left to be worth a second load (at least two trials
   per slot of the node), or if the node has never been used (otherwise it would idle for the whole sweep).

Each node also gets `lookahead` trial(s) beyond its free slots, queued by Ray until a slot frees: a trial that is
already waiting when the one before it ends takes over its warm worker process (Tune reuses the actor only for a
trial waiting with the same resources), instead of paying a new process and DSPy import.

A node never runs more distinct models at once than it can hold (its `arb-ollama-max-models` label, Ollama's
`OLLAMA_MAX_LOADED_MODELS`; default 1), so a switch waits for the node's running trials of the old model to end.

Within a model, and among unpinned trials, the longest expected trial goes first (`grid.cost`: estimated from
the trial's settings, refined by the trials that have finished), so the sweep does not end on one long trial.

A node's slot that no waiting trial can use (the end of the sweep, or a model switch that must wait for the old
model's last trials) is lent to the trials running there: `grants` says how many requests each may have in flight
(1 + lent slots), and `publish` hands every change to the trials (`grid.slots`). A trial placed later takes its
slot back.

Trials that need no Ollama slot (API and embedded models) are handed out unpinned. A trial that errors is queued
again once (Tune's own retry would pin it to the same node, which may be the one that died), and nodes that left
the cluster are dropped from the plan, so their trials go elsewhere.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from grid.cost import CostModel
from grid.spec import Trial

SLOTS = "ollama_slots"
"""Custom resource a GPU node advertises: how many trials its Ollama serves at once (cluster.yaml sets it)."""
MAX_MODELS_LABEL = "arb-ollama-max-models"
NODE_ID_LABEL = "ray.io/node-id"
MAX_ATTEMPTS = 2
STEAL_TRIALS_PER_SLOT = 2
QUARANTINE_S = 30.0


@dataclass
class Node:
    """What the searcher knows of one Ollama node."""

    slots: int
    max_models: int = 1
    resident: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Models the node holds, least recently used first (what Ollama evicts first)."""
    running: dict[str, str] = field(default_factory=dict)
    """Tune trial id → model, for trials placed here that have not ended."""
    loads: int = 0
    quarantined_until: float = 0.0
    """After a trial errored here: no new trials until then (the node may be dying; Ray takes a while to say so)."""
    gated: set[str] = field(default_factory=set)
    """Trials of the node's next model, placed to wait for the switch (their worker processes are warm, their slots
    held; they send nothing until the old model's last trial has ended)."""

    def free(self) -> int:
        """Slots not taken by a running trial (negative: trials are queued here, waiting for a slot)."""
        return self.slots - len(self.running)

    def running_models(self) -> set[str]:
        """Models whose trials are running here (not the one gated trials wait for)."""
        return {m for tid, m in self.running.items() if tid not in self.gated}

    def serving(self) -> int:
        """Trials that may send requests now or as soon as they get a slot (not gated ones)."""
        return len(self.running) - len(self.gated)

    def can_start(self, model: str, lookahead: int = 0) -> bool:
        """A free slot (or room in the queue of `lookahead` trials), and `model` is already running here or fits
        beside the models that are."""
        models = self.running_models()
        return self.free() > -lookahead and (model in models or len(models) < self.max_models)

    def place(self, trial_id: str, model: str) -> None:
        if model not in self.resident:
            self.loads += 1
            self.resident[model] = None
            while len(self.resident) > self.max_models:
                self.resident.popitem(last=False)
        self.resident.move_to_end(model)
        self.running[trial_id] = model


def ollama_nodes(nodes: list[dict[str, Any]]) -> dict[str, Node]:
    """The live nodes of `ray.nodes()` that advertise Ollama slots, by node id."""
    out: dict[str, Node] = {}
    for info in nodes:
        slots = int(info.get("Resources", {}).get(SLOTS, 0))
        if info.get("Alive") and slots > 0:
            labels = info.get("Labels") or {}
            out[info["NodeID"]] = Node(slots=slots, max_models=max(1, int(labels.get(MAX_MODELS_LABEL, 1))))
    return out


class ModelAwareSearcher(Searcher):
    """Hands out the grid's trials in an order, and to nodes, that keep model loads low (see the module docstring).

    `pinned` models need an Ollama slot; `nodes` maps node ids to what they offer (empty: nothing is pinned).
    `refresh` returns the live Ollama nodes (as `ollama_nodes` does); it is called at most every `refresh_s` seconds,
    so nodes that left are dropped and nodes that joined (an autoscaler) are used. With no Ollama node at all for
    `orphan_timeout_s`, the searcher stops handing out trials: the sweep ends interrupted, and `arb resume` runs
    the rest once nodes are back.
    """

    def __init__(
        self,
        trials: list[Trial],
        runtime: dict[str, Any],
        *,
        pinned: set[str],
        nodes: dict[str, Node],
        refresh: Callable[[], dict[str, Node]] | None = None,
        refresh_s: float = 2.0,
        orphan_timeout_s: float = 600.0,
        lookahead: int = 1,
        cost: CostModel | None = None,
        publish: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.nodes = nodes
        self.cost = cost or CostModel()
        self.queues: dict[str, list[Trial]] = {}
        self.free_trials: list[Trial] = []
        for trial in trials:
            if nodes and trial.model in pinned:
                self.queues.setdefault(trial.model, []).append(trial)
            else:
                self.free_trials.append(trial)
        self._sort()
        self._observed = 0
        self.grants: dict[str, int] = {}
        """Tune trial id → requests it may have in flight (only trials granted more than one are listed)."""
        self._publish = publish
        self.attempts: dict[str, int] = {}
        self.live: dict[str, tuple[Trial, str | None]] = {}
        """Tune trial id → (trial, node id or None) for trials handed out and not yet ended."""
        self._refresh = refresh
        self._refresh_s = refresh_s
        self._refreshed = 0.0
        self._orphan_timeout_s = orphan_timeout_s
        self.lookahead = lookahead
        self._no_nodes_since: float | None = None

    @property
    def loads(self) -> dict[str, int]:
        """Model loads the plan has caused so far, per node."""
        return {node_id: node.loads for node_id, node in self.nodes.items()}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._drop_dead_nodes()
        choice = self._next_pinned()
        if choice is not None:
            trial, node_id, gated = choice
            self.nodes[node_id].place(trial_id, trial.model)
            if gated:
                self.nodes[node_id].gated.add(trial_id)
        elif self.free_trials:
            trial, node_id = self.free_trials.pop(0), None
        elif not self.live and (not any(self.queues.values()) or self._orphaned()):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's end-of-search sentinel is a str
        else:
            self._regrant()  # every slot is busy (or waiting for a switch): lend what nothing else can use
            return None  # Tune asks again
        self.live[trial_id] = (trial, node_id)
        self.attempts[trial.key] = self.attempts.get(trial.key, 0) + 1
        self._regrant()
        return {
            "trial": trial.model_dump(), "runtime": self.runtime, "node": node_id, "slot_id": trial_id,
            "suggested_at": time.time(),
        }  # fmt: skip

    def dead_pins(self) -> set[str]:
        """Trials handed to nodes that have since left the cluster (if still waiting there, they never start)."""
        self._drop_dead_nodes()
        return {tid for tid, (_, node_id) in self.live.items() if node_id is not None and node_id not in self.nodes}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial, node_id = self.live.pop(trial_id, (None, None))
        if trial is not None and result is not None and not error:
            self.cost.observe(trial, result)
            self._observed += 1
            if self._observed & (self._observed - 1) == 0:  # re-sort after 1, 2, 4, 8 … results: O(n log² n)
                self._sort()
        if trial is not None and result is None and not error:
            # Stopped before it ran (its node left while it waited there): hand it out again, at no attempt's cost.
            self.attempts[trial.key] -= 1
            error = True
        if node_id is not None and node_id in self.nodes:
            self.nodes[node_id].running.pop(trial_id, None)
            self.nodes[node_id].gated.discard(trial_id)
            if error:
                self.nodes[node_id].quarantined_until = time.monotonic() + QUARANTINE_S
                self._refreshed = 0.0
        if trial is not None and error and self.attempts.get(trial.key, 0) < MAX_ATTEMPTS:
            if node_id is None:
                self.free_trials.insert(0, trial)
            else:
                self.queues.setdefault(trial.model, []).insert(0, trial)
        self._regrant()

    def _sort(self) -> None:
        """Longest expected trial first, in every queue."""
        for queue in (*self.queues.values(), self.free_trials):
            queue.sort(key=self.cost.estimate, reverse=True)
        self._work: dict[str, tuple[int, float]] = {}
        """model → (queue length, expected seconds of its waiting trials), computed when asked."""

    def _regrant(self) -> None:
        """Open the gate of trials whose node has switched; lend each node's slots that no waiting trial can take
        to the trials running there, evenly (the first placed first for the remainder); gated trials get 0. Hand
        the grants to `publish` when they change."""
        waiting = {m: q for m, q in self.queues.items() if q}
        held = {m for node in self.nodes.values() for m in node.resident}
        grants: dict[str, int] = {}
        for node in self.nodes.values():
            if node.gated and not node.running_models():
                node.gated.clear()  # the old model's last trial has ended: the next model's trials may start
            grants.update({tid: 0 for tid in node.gated})
            spare = node.slots - node.serving()
            serving = [tid for tid in node.running if tid not in node.gated]
            if spare <= 0 or not serving or self._pick(node, waiting, held, gate=False) is not None:
                continue
            for i, tid in enumerate(serving):
                extra = spare // len(serving) + (1 if i < spare % len(serving) else 0)
                if extra:
                    grants[tid] = 1 + extra
        if grants != self.grants:
            self.grants = grants
            if self._publish is not None:
                self._publish(dict(grants))

    def _next_pinned(self) -> tuple[Trial, str, bool] | None:
        """(trial, node id, whether it waits for the node's model switch), or None."""
        waiting = {m: q for m, q in self.queues.items() if q}
        if not waiting:
            return None
        held = {m for node in self.nodes.values() for m in node.resident}
        # Emptiest nodes first, so that trials spread over the cluster before any node takes a second one.
        by_room = sorted(self.nodes.items(), key=lambda kv: -kv[1].free())
        for gate in (False, True):  # a trial that can start now anywhere beats one that waits for a switch
            for node_id, node in by_room:
                model = self._pick(node, waiting, held, gate=gate)
                if model is not None:
                    return waiting[model].pop(0), node_id, gate
        return None

    def _pick(self, node: Node, waiting: dict[str, list[Trial]], held: set[str], *, gate: bool) -> str | None:
        """The model whose next trial `node` should take now (see the module docstring), or None. With `gate`:
        the model the node should switch to once its running model's last trial ends, for a trial that takes a
        free slot now but waits for the switch: its worker process starts (or is handed over) while the old
        model's last trial runs, instead of after it."""
        if node.free() <= -self.lookahead or node.quarantined_until > time.monotonic():
            return None
        if gate:
            running = node.running_models()
            # Only into a free slot: a gated trial queued with the old model's last trials could be started before
            # them (Tune starts any waiting trial with the same resources), hold their slots, and wait for them.
            if node.free() <= 0 or not running or len(running) < node.max_models:
                return None
            nxt = {node.running[tid] for tid in node.gated}
            ok = [m for m in waiting if m not in running and (not nxt or m in nxt)]
        else:
            ok = [m for m in waiting if node.can_start(m, self.lookahead) and not (node.gated and m not in {
                node.running[tid] for tid in node.gated})]  # fmt: skip
        own = [m for m in reversed(node.resident) if m in ok]
        fresh = [m for m in ok if m not in held]
        worth = STEAL_TRIALS_PER_SLOT * node.slots
        steal = [m for m in ok if node.loads == 0 or len(waiting[m]) >= worth]
        for candidates in (own, self._most_work_first(fresh, waiting), self._most_work_first(steal, waiting)):
            if candidates:
                return candidates[0]
        return None

    def _most_work_first(self, models: list[str], waiting: dict[str, list[Trial]]) -> list[str]:
        if len(models) < 2:
            return models
        # cached per queue length: a queue only shrinks from the front or grows by a retry, and a re-sort clears it
        work = self._work
        for m in models:
            if work.get(m, (None, 0.0))[0] != len(waiting[m]):
                work[m] = (len(waiting[m]), sum(self.cost.estimate(t) for t in waiting[m]))
        return sorted(models, key=lambda m: -work[m][1])

    def _orphaned(self) -> bool:
        """True once pinned trials have waited `orphan_timeout_s` with no Ollama node in the cluster."""
        if self.nodes:
            self._no_nodes_since = None
            return False
        if self._no_nodes_since is None:
            self._no_nodes_since = time.monotonic()
        return time.monotonic() - self._no_nodes_since > self._orphan_timeout_s

    def _drop_dead_nodes(self) -> None:
        if self._refresh is None or time.monotonic() - self._refreshed < self._refresh_s:
            return
        self._refreshed = time.monotonic()
        current = self._refresh()
        for node_id in [n for n in self.nodes if n not in current]:
            # Its running trials error out and come back through on_trial_complete; its models are no longer held.
            del self.nodes[node_id]
        for node_id, node in current.items():
            self.nodes.setdefault(node_id, node)


class DeadNodeScheduler(FIFOScheduler):
    """Tune's FIFO scheduler, plus: a trial still waiting on a node that left the cluster is stopped, so the
    searcher hands it out again on a live node (a placement group pinned to a dead node would wait forever)."""

    def __init__(self, searcher: ModelAwareSearcher) -> None:
        super().__init__()
        self.searcher = searcher

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        gone = self.searcher.dead_pins()
        if gone:
            for trial in tune_controller.get_trials():
                if trial.status == "PENDING" and trial.trial_id in gone:
                    tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)
