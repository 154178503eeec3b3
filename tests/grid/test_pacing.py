"""Keeping slots busy: several examples in flight per trial, slots lent at the end of a node's work, longest trials
first, per-trial time breakdown, and data directories for trials larger than the sample files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from stub_server import StubServer, table_responder

from grid.cost import CostModel, expected_calls
from grid.placement import ModelAwareSearcher, Node
from grid.spec import GridSpec, Trial, expand
from trainables.evaluate import evaluate
from trainables.lm import cache as lm_cache
from trainables.lm import slots
from trainables.lm.client import Endpoint, build_lm, new_meter
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.tasks import math as math_task
from trainables.trial import execute_trial

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import bench_data

from trainables.record.schema import Tag

TASKS = ["math", "qa", "analysis", "synthesis", "classification", "extraction", "agentic", "rag", "code"]


def _trials(models: list[str], tasks: list[str], **fields: Any) -> list[Trial]:
    spec = GridSpec(name="p", models=models, tasks=tasks, optimizer="none", demos=[0], n_labeled=[0], **fields)
    return expand(spec, load_registry())


def _peak(intervals: list[tuple[float, float]]) -> int:
    """Most generations the stub served at the same time."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _lm(stub: StubServer, name: str) -> Any:
    lm_cache.install(None)  # every call reaches the server: the runs compare what the server answered
    new_meter(name)
    return build_lm(load_registry().get("llama3.2"), meter=name, role="student", at=Endpoint(stub.url))


def test_examples_in_flight_keep_their_order_and_their_own_accounting(
    math_splits: math_task.Splits, known_answers: dict[str, str]
) -> None:
    with StubServer(["llama3.2"], table_responder(known_answers), slots=4, call_seconds=0.2) as stub:
        one = evaluate(math_task.program(math_splits), math_splits.test, math_task.TASK, lm=_lm(stub, "a"),
                       condition="baseline")  # fmt: skip
        four = evaluate(math_task.program(math_splits), math_splits.test, math_task.TASK, lm=_lm(stub, "b"),
                        condition="baseline", concurrency=4)  # fmt: skip
        peak = _peak(stub.state.served[len(math_splits.test) :])
    assert [r.example_id for r in four.records] == [ex.id for ex in math_splits.test]
    assert [(r.prediction, r.score) for r in four.records] == [(r.prediction, r.score) for r in one.records]
    # each example counts its own call and tokens, not its neighbours' that ran at the same time
    assert [(r.lm_calls, r.prompt_tokens, r.completion_tokens) for r in four.records] == [
        (r.lm_calls, r.prompt_tokens, r.completion_tokens) for r in one.records
    ]
    assert all(r.lm_calls == 1 for r in four.records)
    assert peak > 1 and max(r.in_flight for r in four.records) == 4 and four.mean_in_flight > 1
    assert all(r.in_flight == 1 for r in one.records) and one.mean_in_flight == 1.0


def test_a_live_allowance_is_asked_as_examples_start(math_splits: math_task.Splits) -> None:
    asked: list[int] = []

    def allowance() -> int:
        asked.append(1)
        return 1 if len(asked) <= 3 else 3  # one at a time first, then three

    with StubServer(["llama3.2"], table_responder({}), slots=3, call_seconds=0.1) as stub:
        result = evaluate(math_task.program(math_splits), math_splits.test, math_task.TASK, lm=_lm(stub, "c"),
                          condition="baseline", concurrency=allowance)  # fmt: skip
    starts = [r.in_flight for r in result.records]
    assert starts[0] == 1 and max(starts) == 3 and len(result.records) == len(math_splits.test)


def test_a_server_error_in_flight_fails_the_evaluation(math_splits: math_task.Splits) -> None:
    with StubServer(["llama3.2"], table_responder({}), slots=3) as stub:
        stub.state.fault_always = "500"
        lm = build_lm(load_registry().get("llama3.2").model_copy(update={"retries": 0}), meter="d", role="student",
                      at=Endpoint(stub.url))  # fmt: skip
        new_meter("d")
        with pytest.raises(Exception, match=r"(?i)error|500"):
            evaluate(math_task.program(math_splits), math_splits.test, math_task.TASK, lm=lm, condition="baseline",
                     concurrency=3)  # fmt: skip


def test_a_trial_reports_where_its_time_went_and_its_concurrency(
    stub: StubServer, tracking_uri: str, math_splits: math_task.Splits
) -> None:
    trial = _trials(["llama3.2"], ["math"], n_eval=8, n_val=1, data="sample")[0]
    exp = tracking.ensure_experiment(tracking_uri, trial.grid)
    config = {
        "trial": trial.model_dump(),
        "runtime": {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {"llama3.2": stub.url}},
        "concurrency": 3, "slot_id": "t-1", "suggested_at": 0.0,
    }  # fmt: skip
    result = execute_trial(config)
    for phase in ("setup", "gate", "load", "eval", "publish", "finish", "cpu"):
        assert result[f"time_{phase}"] >= 0.0, phase
    assert result["time_eval"] > 0 and result["ended_at"] >= result["started_at"]
    assert result["eval_in_flight"] > 1  # no slot board outside a sweep: the trial keeps what it was given
    run = MlflowClient(tracking_uri).get_run(
        tracking.find_runs(MlflowClient(tracking_uri), exp, trial.key)[0].info.run_id
    )
    assert run.data.metrics["eval_in_flight"] == result["eval_in_flight"]
    assert not any(k.startswith("time_") for k in run.data.metrics)  # how the sweep ran is not the result
    assert run.data.tags[Tag.STATUS] == tracking.FINISHED and run.info.status == "FINISHED"


def test_the_slot_board_hands_each_trial_its_grant() -> None:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        board = slots.start_board()
        ray.get(board.set.remote({"t-2": 3}))
        granted = slots.allowance("t-2")
        other = slots.allowance("t-9")
        assert granted is not None and other is not None
        assert granted() == 3 and other() == 1
    finally:
        ray.shutdown()
    assert slots.allowance("t-2") is None  # no Ray, no board: the trial keeps its own slot


def test_a_slot_nothing_else_can_use_is_lent_and_taken_back() -> None:
    """One node, two slots, one model at a time: model A's odd last trial gets the slot B cannot use yet."""
    published: list[dict[str, int]] = []
    trials = _trials(["llama3.2", "mistral"], ["math", "qa", "analysis"])
    searcher = ModelAwareSearcher(
        trials, {}, pinned={"llama3.2", "mistral"}, nodes={"n0": Node(slots=2)}, publish=published.append
    )
    handed = []
    for i in range(4):
        config = searcher.suggest(f"t{i}")
        if config is None:
            break
        handed.append((f"t{i}", config))
    first_model = handed[0][1]["trial"]["model"]
    assert len(handed) == 3 and {c["trial"]["model"] for _, c in handed} == {first_model}  # 2 slots + 1 queued
    assert all(c["slot_id"] == tid and c["suggested_at"] > 0 for tid, c in handed)
    searcher.on_trial_complete("t0", {"lm_calls": 1})
    assert searcher.grants == {}  # t2 takes the freed slot
    searcher.on_trial_complete("t1", {"lm_calls": 1})
    assert searcher.grants == {"t2": 2} and published[-1] == {"t2": 2}  # nothing else can use the slot
    # The other model's first trial takes the free slot now (and the worker process t1 leaves), but waits:
    # grant 0 until t2, the last trial of the old model, has ended.
    nxt = searcher.suggest("t5")
    assert nxt is not None and nxt["trial"]["model"] != first_model
    assert searcher.grants == {"t2": 2, "t5": 0} and published[-1] == {"t2": 2, "t5": 0}
    assert searcher.suggest("t6") is None  # no more queued behind t2: it could be started first and block t2
    searcher.on_trial_complete("t2", {"lm_calls": 1})
    assert searcher.grants == {} and published[-1] == {}  # the switch is done: t5 may send
    last = searcher.suggest("t7")
    assert last is not None and last["trial"]["model"] == nxt["trial"]["model"]


def test_longest_expected_trials_go_first_and_estimates_learn() -> None:
    trials = _trials(["llama3.2"], TASKS, n_eval=10)
    searcher = ModelAwareSearcher(trials, {}, pinned={"llama3.2"}, nodes={"n0": Node(slots=1)}, lookahead=0)
    first = searcher.suggest("t0")
    assert first is not None and first["trial"]["task"] == "agentic"  # a ReAct loop: several calls per example
    cost = CostModel()
    by_task = {t.task: t for t in trials}
    assert cost.estimate(by_task["math"]) == cost.estimate(by_task["qa"]) == expected_calls(by_task["qa"]) * 1.0
    cost.observe(by_task["math"], {"lm_calls": 30, "eval_seconds": 60.0})  # 3 calls per example, 2 s each
    assert cost.calls(by_task["math"]) == pytest.approx(30.0)
    assert cost.seconds_per_call("llama3.2") == pytest.approx(2.0)
    assert cost.estimate(by_task["math"]) > cost.estimate(by_task["qa"])
    cost.observe(by_task["qa"], {"lm_calls": 10, "eval_seconds": 5.0, "reused": 1.0})  # no work done: ignored
    assert cost.seconds_per_call("llama3.2") == pytest.approx(2.0)


def test_optimizer_budgets_count_in_the_estimate() -> None:
    spec = dict(models=["llama3.2"], tasks=["math"], demos=[2], n_labeled=[10], n_val=5, n_eval=20)
    registry = load_registry()
    none = expand(GridSpec(name="c", optimizer="none", **spec), registry)[0]  # type: ignore[arg-type]
    boot = expand(GridSpec(name="c", optimizer="bootstrap", **spec), registry)[0]  # type: ignore[arg-type]
    mipro = expand(GridSpec(name="c", optimizer="mipro", **spec), registry)[0]  # type: ignore[arg-type]
    assert expected_calls(none) == 20 < expected_calls(boot) == 50 < expected_calls(mipro)


def test_a_data_directory_feeds_larger_trials(tmp_path: Path) -> None:
    data = bench_data.generate(tmp_path / "data", 30)
    splits = math_task.load(str(data), seed=0, n_labeled=4, n_val=2, n_eval=20)
    assert len(splits.test) == 20 and len({ex.id for ex in splits.test}) == 20
    spec = GridSpec(name="d", models=["llama3.2"], tasks=["math"], data=str(data))
    assert spec.data == str(data)
    for bad, needle in (("relative/dir", "absolute path"), (str(tmp_path / "missing"), "does not exist")):
        with pytest.raises(ValidationError, match=needle):
            GridSpec(name="d", models=["llama3.2"], tasks=["math"], data=bad)
    with pytest.raises(Exception, match=r"put train\.jsonl in"):
        math_task.load(str(tmp_path), seed=0, n_labeled=1, n_val=1, n_eval=1)


def test_trials_of_a_reused_worker_run_in_new_threads(stub: StubServer, tracking_uri: str) -> None:
    """Ray Tune runs each trial of a reused worker process in a new thread; DSPy lets only the thread that first
    changed its settings change them again (mlflow.dspy.autolog does, at every trial)."""
    import threading

    exp = tracking.ensure_experiment(tracking_uri, "p")
    results: dict[str, Any] = {}
    first_done, release = threading.Event(), threading.Event()

    def run(task: str, hold: bool) -> None:
        trial = _trials(["llama3.2"], [task], n_eval=2, n_val=1, data="sample")[0]
        runtime = {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {"llama3.2": stub.url}}
        try:
            results[task] = execute_trial({"trial": trial.model_dump(), "runtime": runtime})
        except Exception as exc:
            results[task] = exc
        first_done.set()
        if hold:  # alive, so the next thread cannot get its identifier
            release.wait(timeout=60)

    first = threading.Thread(target=run, args=("math", True))
    first.start()
    assert first_done.wait(timeout=120)
    second = threading.Thread(target=run, args=("qa", False))
    second.start()
    second.join(timeout=120)
    release.set()
    first.join(timeout=60)
    assert isinstance(results["math"], dict) and isinstance(results["qa"], dict), results
