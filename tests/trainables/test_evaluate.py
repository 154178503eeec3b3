"""`trainables.evaluate` on the in-process fake LM (`tests/fakes.py`): scores known by construction, a broken reply
scored wrong and counted, each example's own accounting, and the same records at any concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dspy
import pytest
from fakes import CALLS, RESPONDERS
from stub_server import chat_adapter_reply, requested_output_fields

from trainables.evaluate import evaluate, joined
from trainables.lm import cache as lm_cache
from trainables.lm.client import build_lm, drop_meter, new_meter
from trainables.registry import ModelEntry
from trainables.tasks import get_task

MATH = get_task("math")
SPLITS = MATH.load("sample", seed=0, n_labeled=2, n_val=1, n_eval=8)


@pytest.fixture(autouse=True)
def no_response_cache() -> Iterator[None]:
    """Every call reaches the fake (DSPy's default cache would replay an earlier run's answers from ~/.dspy_cache)."""
    before = dspy.cache
    lm_cache.install(None)
    yield
    dspy.cache = before


def _lm(model: str, respond: Any) -> Any:
    RESPONDERS[model] = respond
    CALLS.pop(model, None)
    return build_lm(ModelEntry(provider="inprocess", id=model), meter=model, role="student")


def _answers(right: int, broken: int = 0) -> Any:
    """The first `right` test questions answered right, the next `broken` not in DSPy's format, the rest "0"."""
    order = [ex.question for ex in SPLITS.test]
    gold = {ex.question: ex.answer for ex in SPLITS.test}

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        asked = str(messages[-1]["content"])
        i = next(i for i, q in enumerate(order) if q in asked)
        if right <= i < right + broken:
            return "I would rather not say."
        fields = {f: "so" for f in requested_output_fields(messages)}
        return chat_adapter_reply({**fields, "answer": gold[order[i]] if i < right else "0"})

    return respond


def test_scores_are_the_metric_over_the_examples_and_each_call_is_counted_once() -> None:
    meter = new_meter("fake-eval")
    try:
        result = evaluate(
            MATH.program(SPLITS), SPLITS.test, MATH, lm=_lm("fake-eval", _answers(5)), condition="baseline"
        )
    finally:
        drop_meter("fake-eval")
    assert result.score == pytest.approx(100 * 5 / 8) and [r.score for r in result.records] == [1.0] * 5 + [0.0] * 3
    assert result.parse_failures == 0 and [r.lm_calls for r in result.records] == [1] * 8
    assert CALLS["fake-eval"] == meter.total().calls == 8 and meter.total().prompt_tokens > 0


def test_a_reply_out_of_format_scores_wrong_is_counted_and_costs_one_retry() -> None:
    new_meter("fake-broken")
    try:
        result = evaluate(MATH.program(SPLITS), SPLITS.test, MATH, lm=_lm("fake-broken", _answers(3, broken=2)),
                          condition="baseline")  # fmt: skip
    finally:
        drop_meter("fake-broken")
    assert [r.error for r in result.records] == [""] * 3 + ["parse"] * 2 + [""] * 3
    assert result.parse_failures == 2 and result.score == pytest.approx(100 * 3 / 8)
    # ChatAdapter fails, then DSPy's JSON fallback asks once more: two calls, no more
    assert [r.lm_calls for r in result.records][3:5] == [2, 2]


def test_several_examples_at_once_give_the_same_records_in_order() -> None:
    answer = _answers(6)
    together = threading.Barrier(4, timeout=30)  # passes only once four requests are in flight at the same time

    def slow(model: str, messages: list[dict[str, Any]]) -> str:
        if model == "fake-par4":
            together.wait()
        return answer(model, messages)

    new_meter("fake-par")
    try:
        one = evaluate(MATH.program(SPLITS), SPLITS.test[:4], MATH, lm=_lm("fake-par", slow), condition="baseline")
        rest = evaluate(MATH.program(SPLITS), SPLITS.test[4:], MATH, lm=_lm("fake-par4", slow), condition="baseline",
                        concurrency=4)  # fmt: skip
    finally:
        drop_meter("fake-par")
    assert [r.error for r in rest.records] == [""] * 4 and max(r.in_flight for r in rest.records) == 4
    both = joined([one, rest], MATH)
    assert [r.example_id for r in both.records] == [str(ex.get("id", "")) for ex in SPLITS.test]
    assert both.score == pytest.approx(100 * 6 / 8)
