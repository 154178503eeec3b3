"""The model-aware searcher, driven by a small discrete-event simulation of trials ending (no Ray needed)."""

from __future__ import annotations

import heapq
import itertools
import time

import pytest
from ray.tune.search import Searcher

from grid.placement import ModelAwareSearcher, Node
from grid.spec import GridSpec, Trial, expand
from trainables.registry import load_registry

OLLAMA = ["llama3.2", "mistral", "phi4", "qwen2.5:7b", "qwen3:4b", "deepseek-r1:7b"]


def _trials(models: list[str], tasks: int = 9) -> list[Trial]:
    names = ["math", "qa", "analysis", "synthesis", "classification", "extraction", "agentic", "rag", "code"]
    spec = GridSpec(name="p", models=models, tasks=names[:tasks], optimizer="none", demos=[0], n_labeled=[0])
    return expand(spec, load_registry())


def _simulate(
    searcher: ModelAwareSearcher, duration: dict[str, float] | None = None, fail: set[str] | None = None,
    lifo: bool = False,
) -> tuple[float, dict[str, list[tuple[str | None, str]]]]:  # fmt: skip
    """Run the searcher to the end, the way Ray runs what it hands out: a trial starts when its node has a free
    slot (else it queues there, first come first served) and ends after its duration (1.0 by default); keys in
    `fail` error on their first attempt. Returns the end time and, per key, the (node, outcome) of each attempt."""
    now, ids, running = 0.0, itertools.count(), []
    attempts: dict[str, list[tuple[str | None, str]]] = {}
    started: dict[str | None, dict[str, str]] = {}
    queued: dict[str | None, list[tuple[str, Trial]]] = {}

    held: dict[str, tuple[Trial, str | None, bool]] = {}
    """Trials started but gated (waiting for their node's model switch): they run once the gate opens."""

    def gated(trial_id: str, node: str | None) -> bool:
        return node is not None and node in searcher.nodes and trial_id in searcher.nodes[node].gated

    def start(trial_id: str, trial: Trial, node: str | None) -> None:
        started.setdefault(node, {})[trial_id] = trial.model
        if node is not None:  # never more models at once than the node holds, never more trials than slots
            serving = {m for tid, m in started[node].items() if not gated(tid, node) and tid not in held}
            assert len(serving) <= searcher.nodes[node].max_models
            assert len(started[node]) <= searcher.nodes[node].slots
        failed = trial.key in (fail or set()) and trial.key not in attempts
        attempts.setdefault(trial.key, []).append((node, "error" if failed else "ok"))
        if gated(trial_id, node):
            held[trial_id] = (trial, node, failed)
            return
        end = now + (duration or {}).get(trial.model, 1.0)
        heapq.heappush(running, (end, trial_id, node, failed))

    def fill() -> None:
        """With `lifo`: Ray Tune starts pending trials some time after they are handed out, and any pending trial
        with the same resources, not the oldest: the newest first is the worst case."""
        if not lifo:
            return
        for node, waiting in queued.items():
            while waiting and len(started.get(node, {})) < searcher.nodes[node].slots:
                start(*waiting.pop(-1), node)

    def open_gates() -> None:
        for trial_id, (trial, node, failed) in list(held.items()):
            if not gated(trial_id, node):
                del held[trial_id]
                serving = {m for tid, m in started[node].items() if not gated(tid, node) and tid not in held}
                assert node is None or len(serving) <= searcher.nodes[node].max_models
                heapq.heappush(running, (now + (duration or {}).get(trial.model, 1.0), trial_id, node, failed))

    for _ in range(10_000):
        while True:
            trial_id = f"t{next(ids)}"
            config = searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                break
            trial, node = Trial.model_validate(config["trial"]), config["node"]
            if node is not None and (lifo or len(started.get(node, {})) >= searcher.nodes[node].slots):
                queued.setdefault(node, []).append((trial_id, trial))
            else:
                start(trial_id, trial, node)
        fill()
        if config == Searcher.FINISHED:
            assert not any(queued.values()) and not held
            return now, attempts
        open_gates()
        assert running, "the searcher stalled with nothing running"
        now, trial_id, node, failed = heapq.heappop(running)
        started[node].pop(trial_id)
        if queued.get(node) and not lifo:
            start(*queued[node].pop(0), node)
        searcher.on_trial_complete(trial_id, None if failed else {"ok": 1}, error=failed)
        open_gates()
    raise AssertionError("simulation did not end")


def _nodes(count: int, slots: int = 2, max_models: int = 1) -> dict[str, Node]:
    return {f"n{i}": Node(slots=slots, max_models=max_models) for i in range(count)}


@pytest.mark.parametrize(("max_models", "rounds"), [(2, 9.0), (1, 10.0)])
def test_six_models_on_three_nodes_each_load_once_and_balance(max_models: int, rounds: float) -> None:
    trials = _trials(OLLAMA)
    searcher = ModelAwareSearcher(trials, {}, pinned=set(OLLAMA), nodes=_nodes(3, max_models=max_models))
    end, attempts = _simulate(searcher)
    assert sorted(attempts) == sorted(t.key for t in trials) and all(len(a) == 1 for a in attempts.values())
    assert sum(searcher.loads.values()) == 6 and set(searcher.loads.values()) == {2}
    # 18 unit trials per node on 2 slots: 9 rounds; a node that holds one model at a time lets a slot idle while
    # the ninth trial of its first model ends (it cannot start the next model beside it)
    assert end == pytest.approx(rounds)


def test_fewer_models_than_nodes_still_use_every_node() -> None:
    searcher = ModelAwareSearcher(_trials(OLLAMA[:2]), {}, pinned=set(OLLAMA[:2]), nodes=_nodes(3))
    end, _ = _simulate(searcher)
    # every node is used; one more load only where 2 trials per slot were still waiting
    assert all(loads >= 1 for loads in searcher.loads.values()) and sum(searcher.loads.values()) <= 4
    # 18 trials on 6 slots: 3 rounds, plus one for the uneven split and one for a trial queued behind a busy slot
    assert end <= 5.0


def test_a_second_load_only_when_enough_work_is_left() -> None:
    # 4 models on 3 nodes: the fourth model is shared, the others stay where they are.
    searcher = ModelAwareSearcher(_trials(OLLAMA[:4]), {}, pinned=set(OLLAMA[:4]), nodes=_nodes(3))
    end, _ = _simulate(searcher)
    assert sum(searcher.loads.values()) <= 4 + 2 and end <= 36 / 6 + 2


def test_errored_trials_are_retried_once_anywhere_and_nodes_that_left_are_dropped() -> None:
    trials = _trials(OLLAMA[:3], tasks=4)
    alive = _nodes(3)
    searcher = ModelAwareSearcher(trials, {}, pinned=set(OLLAMA), nodes=_nodes(3), refresh=lambda: alive, refresh_s=0)
    first = searcher.suggest("a")
    assert first is not None and first["node"] is not None
    del alive[first["node"]]  # its node dies: the trial errors, and is handed out again on a live node
    searcher.on_trial_complete("a", error=True)
    _, attempts = _simulate(searcher)
    key = Trial.model_validate(first["trial"]).key
    assert attempts[key] == [(n, "ok") for n, _ in attempts[key]] and attempts[key][0][0] in alive
    assert first["node"] not in searcher.nodes and len(attempts) == len(trials)


def test_with_no_node_left_the_sweep_ends_interrupted_and_a_new_node_is_used() -> None:
    alive = _nodes(1)
    searcher = ModelAwareSearcher(
        _trials(OLLAMA[:1], tasks=3), {}, pinned=set(OLLAMA), nodes=_nodes(1), refresh=lambda: alive, refresh_s=0,
        orphan_timeout_s=0.2,
    )  # fmt: skip
    assert searcher.suggest("a") is not None
    alive.clear()
    searcher.on_trial_complete("a", error=True)
    assert searcher.suggest("b") is None  # waits for a node ...
    alive["new"] = Node(slots=1)  # ... and uses one that joins
    config = searcher.suggest("b")
    assert config is not None and config["node"] == "new"
    searcher.on_trial_complete("b")
    alive.clear()
    time.sleep(0.3)
    assert searcher.suggest("c") is None or searcher.suggest("c") == Searcher.FINISHED
    assert searcher.suggest("d") == Searcher.FINISHED  # nothing to run on: ends, `arb resume` does the rest


def test_a_trial_failing_twice_is_given_up() -> None:
    trials = _trials(OLLAMA[:1], tasks=1)
    searcher = ModelAwareSearcher(trials, {}, pinned=set(), nodes={})
    for attempt in ("a", "b"):
        assert searcher.suggest(attempt) is not None
        searcher.on_trial_complete(attempt, error=True)
    assert searcher.suggest("c") == Searcher.FINISHED


def test_api_and_single_machine_trials_are_not_pinned() -> None:
    trials = _trials(["gpt-4o", "llama3.2"], tasks=2)
    searcher = ModelAwareSearcher(trials, {"x": 1}, pinned={"llama3.2"}, nodes={})
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert all(c is not None and c["node"] is None and c["runtime"] == {"x": 1} for c in configs)


def test_a_trial_waiting_on_a_node_that_left_is_handed_out_again() -> None:
    alive = _nodes(2, slots=1)
    searcher = ModelAwareSearcher(
        _trials(OLLAMA[:2], tasks=2), {}, pinned=set(OLLAMA), nodes=_nodes(2, slots=1), refresh=lambda: alive,
        refresh_s=0,
    )  # fmt: skip
    handed = {tid: searcher.suggest(tid) for tid in ("a", "b", "c", "d")}  # one running and one queued per node
    assert all(c is not None and c["node"] for c in handed.values())
    gone = handed["a"]["node"]  # type: ignore[index]
    del alive[gone]
    waiting = {tid for tid, c in handed.items() if c["node"] == gone}  # type: ignore[index]
    assert searcher.dead_pins() == waiting
    for tid in waiting:  # what DeadNodeScheduler makes Tune do: stop the waiting trial, no result
        searcher.on_trial_complete(tid)
    for tid in set(handed) - waiting:  # the live node's two trials finish
        searcher.on_trial_complete(tid, {"ok": 1})
    _, attempts = _simulate(searcher)
    assert len(attempts) == 2 and all(node != gone for a in attempts.values() for node, _ in a)


def test_no_deadlock_whatever_order_queued_trials_start_in() -> None:
    """A trial waiting for its node's model switch must never hold the slot a trial of the old model needs."""
    searcher = ModelAwareSearcher(_trials(OLLAMA), {}, pinned=set(OLLAMA), nodes=_nodes(3))
    _, attempts = _simulate(searcher, lifo=True)
    assert len(attempts) == 54 and all(a[-1][1] == "ok" for a in attempts.values())
