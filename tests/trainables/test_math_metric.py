"""GSM8K metric: a table of cases, edge cases included."""

from __future__ import annotations

import dspy
import pytest

from trainables.tasks.math import gold_answer, metric, normalize_number

NORMALIZE_CASES = [
    ("42", "42"),
    ("The answer is 42.", "42"),
    ("1,500", "1500"),
    ("$1,500.00", "1500"),
    ("18.0", "18"),
    ("-7", "-7"),
    ("3.5 hours", "3.5"),
    ("first 12 then 20, total 80", "80"),
    ("no number here", None),
    ("", None),
    (None, None),
    ("€20", "20"),
    (".5", "0.5"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZE_CASES)
def test_normalize_number(text: str | None, expected: str | None) -> None:
    assert normalize_number(text) == expected


GOLD_CASES = [
    ("6*8=48\n48-30=18\n#### 18", "18"),
    ("reasoning\n#### 1,500", "1500"),
    ("#### -3", "-3"),
    ("a 12 b\n#### 0", "0"),
]


@pytest.mark.parametrize(("field", "expected"), GOLD_CASES)
def test_gold_answer(field: str, expected: str) -> None:
    assert gold_answer(field) == expected


METRIC_CASES = [
    ("18", "18", 1.0),
    ("18", "The total is 18 muffins.", 1.0),
    ("1500", "$1,500", 1.0),
    ("18", "18.0", 1.0),
    ("18", "17", 0.0),
    ("18", "18 or 19", 0.0),  # the last number counts
    ("18", "", 0.0),
    ("18", None, 0.0),
    ("0", "0", 1.0),
    ("-3", "3", 0.0),
]


@pytest.mark.parametrize(("gold", "predicted", "score"), METRIC_CASES)
def test_metric(gold: str, predicted: str | None, score: float) -> None:
    example = dspy.Example(question="q", answer=gold).with_inputs("question")
    pred = dspy.Prediction(answer=predicted)
    assert metric(example, pred) == score


def test_metric_without_prediction_scores_zero() -> None:
    assert metric(dspy.Example(answer="1"), None) == 0.0


def test_sample_data_loads_through_datasets(math_splits) -> None:  # type: ignore[no-untyped-def]
    assert (len(math_splits.train), len(math_splits.val), len(math_splits.test)) == (6, 3, 8)
    ids = [e.id for e in math_splits.train + math_splits.val + math_splits.test]
    assert len(set(ids)) == len(ids)
    assert all(e.answer and e.answer.lstrip("-").isdigit() for e in math_splits.test)
