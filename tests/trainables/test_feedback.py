"""Feedback metrics (what GEPA's reflection model reads): on every task's existing case table the feedback's score
is exactly the task's metric, and the text says what a reflection model can act on (gold answer, what was parsed,
missed and spurious entities, the failing assertion, which field was malformed)."""

from __future__ import annotations

from typing import Any

import dspy
import pytest
from test_math_metric import METRIC_CASES
from test_tasks import CODE_CASES, ENTITY_CASES, FAITH_CASES, HE_EXAMPLE, LABEL_CASES, PASSAGES, _entities
from test_text_tasks import DOC, EM, SUMMARY_CASES, YES_NO

from trainables.tasks import TASKS


def _agree(task: str, example: dspy.Example, pred: Any, metric: float | None = None) -> dspy.Prediction:
    """The feedback of `task` on one case, after checking that its score is the task's metric (`metric`: the
    metric's value as its own test table states it, where computing it again would run generated code twice)."""
    out = TASKS[task].feedback(example, pred, None, "predict", None)  # GEPA's five positional arguments
    assert out.score == pytest.approx(TASKS[task].metric(example, pred) if metric is None else metric)
    assert isinstance(out.feedback, str) and out.feedback
    return out


def test_every_task_has_a_feedback_metric_with_gepas_signature() -> None:
    import inspect

    for task in TASKS.values():
        assert task.feedback is not None, task.name
        inspect.signature(task.feedback).bind(None, None, None, None, None)  # what dspy.GEPA checks


@pytest.mark.parametrize(("gold", "predicted", "score"), METRIC_CASES)
def test_math(gold: str, predicted: str | None, score: float) -> None:
    out = _agree("math", dspy.Example(question="q", answer=gold), dspy.Prediction(answer=predicted))
    assert out.score == score
    if not score:
        assert gold in out.feedback  # the gold number
        if predicted:
            assert "no number" in out.feedback or "last number in the answer is" in out.feedback


def test_math_names_the_missing_field() -> None:
    out = _agree("math", dspy.Example(question="q", answer="7"), dspy.Prediction())
    assert "`answer`" in out.feedback and "missing" in out.feedback and "7" in out.feedback


@pytest.mark.parametrize(("text", "label"), LABEL_CASES)
def test_classification(text: str | None, label: str | None) -> None:
    gold = "card_arrival"
    out = _agree("classification", dspy.Example(text="t", label=gold), dspy.Prediction(label=text))
    assert gold in out.feedback
    if text and label is None:
        assert "not one of the 77 intent labels" in out.feedback


@pytest.mark.parametrize(("pred", "gold", "score"), EM)
def test_qa(pred: str | None, gold: str, score: float) -> None:
    out = _agree("qa", dspy.Example(question="q", answer=gold), dspy.Prediction(answer=pred))
    assert out.score == score and repr(gold) in out.feedback


@pytest.mark.parametrize(("task", "gold"), [("analysis", "yes"), ("analysis", "no"), ("agentic", "yes")])
@pytest.mark.parametrize(("text", "said"), YES_NO)
def test_yes_no_tasks(task: str, gold: str, text: object, said: str | None) -> None:
    out = _agree(task, dspy.Example(question="q", answer=gold), dspy.Prediction(answer=text))
    assert gold in out.feedback
    if text not in (None, "") and said is None:
        assert "neither yes nor no" in out.feedback


@pytest.mark.parametrize(("gold", "predicted", "score"), ENTITY_CASES)
def test_extraction(gold: list[tuple[str, str]], predicted: Any, score: float) -> None:
    out = _agree("extraction", dspy.Example(entities=_entities(*gold)), dspy.Prediction(entities=predicted))
    assert out.score == pytest.approx(score)


def test_extraction_lists_missed_and_spurious_entities_with_types() -> None:
    example = dspy.Example(entities=_entities(("PER", "Ann Lee"), ("LOC", "Rome")))
    out = _agree("extraction", example, dspy.Prediction(entities=_entities(("PER", "Ann Lee"), ("ORG", "Rome"))))
    assert "Missed: LOC 'Rome'" in out.feedback and "Spurious" in out.feedback and "ORG 'Rome'" in out.feedback
    assert "Ann Lee" not in out.feedback.split("Missed")[1]  # found entities are not listed as missed
    malformed = _agree("extraction", example, dspy.Prediction())
    assert "`entities`" in malformed.feedback and "LOC 'Rome'" in malformed.feedback


@pytest.mark.parametrize(("answer", "score"), FAITH_CASES)
def test_rag(answer: str | None, score: float) -> None:
    example = dspy.Example(question="q", answer="twice a day")
    out = _agree("rag", example, dspy.Prediction(answer=answer, passages=PASSAGES))
    assert out.score == pytest.approx(score)
    if 0 < score < 1:
        assert "unsupported words" in out.feedback and "'twice a day'" in out.feedback


@pytest.mark.parametrize(("pred", "ref", "ratio", "score"), SUMMARY_CASES)
def test_synthesis(pred: str | None, ref: str, ratio: float, score: float) -> None:
    out = _agree("synthesis", dspy.Example(document=DOC, summary=ref), dspy.Prediction(summary=pred))
    assert out.score == pytest.approx(score)
    if pred:
        assert f"copied {ratio:.2f}" in out.feedback


@pytest.mark.parametrize(("code", "ok"), CODE_CASES)
def test_code(code: str, ok: bool) -> None:
    # `ok` is the metric's value: tests/trainables/test_tasks.py::test_code_pass_at_1 holds `passes` to this same table
    out = _agree("code", HE_EXAMPLE, dspy.Prediction(code=code), metric=float(ok))
    if code == "def add(a, b):\n    return a - b":
        assert "assert candidate(2, 3) == 5" in out.feedback and "AssertionError" in out.feedback
    if "while True" in code:
        assert "timed out" in out.feedback
    if "exit(0)" in code:
        assert "exited before the tests ran" in out.feedback
