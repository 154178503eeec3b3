"""Two scores per example from one prediction: each task's headline metric (forgiving answer format) and its strict
score (the study's plain exact match). Examples are built by the tasks' own loaders from rows in each dataset's
schema; predictions are what models write."""

from __future__ import annotations

from typing import Any

import dspy
import pytest

from trainables.evaluate import evaluate
from trainables.tasks import TASKS, agentic, analysis, classification, extraction, math, qa, rag

# (task, row in the dataset's schema, the loader's conversion, prediction fields, headline, strict)
CASES: list[tuple[str, dict[str, Any], Any, dict[str, Any], float, float]] = [
    ("math", {"question": "q", "answer": "9*2=18\n#### 18"}, math._to_example, {"answer": "18"}, 1.0, 1.0),
    ("math", {"question": "q", "answer": "9*2=18\n#### 18"}, math._to_example, {"answer": "18 dollars"}, 1.0, 0.0),
    ("math", {"question": "q", "answer": "#### 460"}, math._to_example, {"answer": "$460"}, 1.0, 0.0),
    ("math", {"question": "q", "answer": "#### 60"}, math._to_example, {"answer": "60%"}, 1.0, 0.0),
    ("math", {"question": "q", "answer": "#### 160"}, math._to_example, {"answer": " 160 "}, 1.0, 1.0),
    ("math", {"question": "q", "answer": "#### 160"}, math._to_example, {"answer": "150"}, 0.0, 0.0),
    ("qa", {"id": "5a8b", "question": "q", "answer": "Paris"}, qa._to_example, {"answer": "paris"}, 1.0, 1.0),
    ("qa", {"id": "5a8b", "question": "q", "answer": "Paris"}, qa._to_example, {"answer": "Paris."}, 1.0, 0.0),
    ("qa", {"id": "5a8b", "question": "q", "answer": "the Beatles"}, qa._to_example, {"answer": "Beatles"}, 1.0, 0.0),
    ("classification", {"text": "t", "label": 11}, classification._to_example, {"label": "card_arrival"}, 1.0, 1.0),
    ("classification", {"text": "t", "label": 11}, classification._to_example, {"label": "Card arrival"}, 1.0, 0.0),
    ("analysis", {"question": "q", "passage": "p", "answer": True}, analysis._to_example, {"answer": "Yes"}, 1.0, 1.0),
    ("analysis", {"question": "q", "passage": "p", "answer": True}, analysis._to_example,
     {"answer": "Yes, because the passage says so."}, 1.0, 0.0),
    ("agentic", {"qid": "t1", "question": "q", "answer": False}, agentic._to_example, {"answer": "no."}, 1.0, 0.0),
    ("agentic", {"qid": "t1", "question": "q", "answer": False}, agentic._to_example, {"answer": "no"}, 1.0, 1.0),
    # rag's headline is faithfulness to the retrieved passages, its strict score the gold answer's exact match
    ("rag", {"id": "56be", "question": "q", "answers": {"text": ["Denver Broncos"], "answer_start": [0]}},
     rag._to_example, {"answer": "the Denver Broncos", "passages": ["The Denver Broncos won."]}, 1.0, 0.0),
    ("rag", {"id": "56be", "question": "q", "answers": {"text": ["Denver Broncos"], "answer_start": [0]}},
     rag._to_example, {"answer": "Denver Broncos", "passages": ["The Denver Broncos won."]}, 1.0, 1.0),
]  # fmt: skip


@pytest.mark.parametrize(("task", "row", "to_example", "fields", "headline", "strict"), CASES)
def test_headline_and_strict_scores(
    task: str, row: dict[str, Any], to_example: Any, fields: dict[str, Any], headline: float, strict: float
) -> None:
    example = to_example(row, 0, "test")
    pred = dspy.Prediction(**fields)
    assert TASKS[task].metric(example, pred) == pytest.approx(headline)
    assert TASKS[task].strict_score(example, pred) == strict


def test_extraction_strict_takes_entity_text_verbatim() -> None:
    row = {"id": "0", "tokens": ["Anna", "Berg", "works", "in", "Bergen"], "ner_tags": [1, 2, 0, 0, 5]}
    example = extraction._to_example(row, 0, "test")
    exact = [{"type": "PER", "text": "Anna Berg"}, {"type": "LOC", "text": "Bergen"}]
    spaced = [{"type": "PER", "text": "Anna  Berg "}, {"type": "LOC", "text": "Bergen"}]
    assert extraction.metric(example, dspy.Prediction(entities=exact)) == 1.0
    assert extraction.strict(example, dspy.Prediction(entities=exact)) == 1.0
    assert extraction.metric(example, dspy.Prediction(entities=spaced)) == 1.0
    assert extraction.strict(example, dspy.Prediction(entities=spaced)) == pytest.approx(0.5)  # 1 of 2 found
    pairs = [(example, dspy.Prediction(entities=spaced))]
    assert extraction.corpus_metric(pairs) == 1.0 and extraction.strict_corpus(pairs) == pytest.approx(0.5)


@pytest.mark.parametrize("task", ["synthesis", "code"])
def test_tasks_without_a_stricter_score_say_so(task: str) -> None:
    assert TASKS[task].strict is None
    assert TASKS[task].with_scoring("strict") is TASKS[task]


def test_strict_scoring_makes_the_strict_score_the_headline() -> None:
    task = TASKS["math"].with_scoring("strict")
    example = math._to_example({"question": "q", "answer": "#### 18"}, 0, "test")
    assert task.metric(example, dspy.Prediction(answer="18 dollars")) == 0.0
    assert task.metric_name == "strict_exact_match"
    assert task.feedback is not None
    judged = task.feedback(example, dspy.Prediction(answer="18 dollars"))
    assert judged.score == 0.0 and "exactly the gold answer" in judged.feedback
    with pytest.raises(ValueError, match="unknown scoring"):
        TASKS["math"].with_scoring("lenient")


class Fixed(dspy.Module):
    """A program that answers every question the same way: no LM call."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(answer=self.answer)


def test_evaluation_records_both_scores_without_a_second_call() -> None:
    examples = [math._to_example({"question": f"q{i}", "answer": "#### 18"}, i, "test") for i in range(4)]
    result = evaluate(Fixed("18 dollars"), examples, TASKS["math"], lm=dspy.LM("openai/unused"), condition="baseline")
    assert [r.score for r in result.records] == [1.0] * 4
    assert [r.strict_score for r in result.records] == [0.0] * 4
    assert result.score == 100.0 and result.strict == 0.0
    assert all(r.lm_calls == 0 for r in result.records)
