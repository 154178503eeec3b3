"""HotPotQA multi-hop questions (`hotpotqa/hotpot_qa`, config `distractor`).

Input: a question. Output: a short answer. Metric: exact match after SQuAD normalization (lower case, no
punctuation, no articles, squeezed whitespace), the official HotPotQA answer EM. The distractor context is not
given to the program: the study scores closed-book question answering.

Data: `hotpotqa/hotpot_qa` was converted to parquet in August 2025 (no script since); pinned at the commit two
other projects pin (1908d6a; distractor: 90,447 train / 7,405 validation).
"""

from __future__ import annotations

from typing import Any

import dspy

from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned
from trainables.tasks.text import exact_match

VERSION = "2"
DATA = HubData(
    "hotpotqa/hotpot_qa",
    "1908d6afbbead072334abe2965f91bd2709910ab",
    "distractor",
    sample_dir="hotpot_qa",
    pool_split="train",
    test_split="validation",
    columns=("id", "question", "answer"),
)


class AnswerQuestion(dspy.Signature):
    """Answer the question with a short factual answer: a few words, no explanation."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words")


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    """SQuAD-normalized exact match of the predicted answer against the gold answer."""
    return exact_match(getattr(pred, "answer", None), example.answer)


def _explain(example: dspy.Example, pred: Any, answer: Any, score: float) -> str:
    """The gold answer (exact match after SQuAD normalization: a longer answer is wrong)."""
    if score:
        return f"Correct: {example.answer!r}."
    return (
        f"The answer {str(answer)[:120]!r} does not match the correct answer {example.answer!r} "
        "(scored by exact match: give only the answer's words, nothing around them)."
    )


feedback = feedback_metric(metric, "answer", _explain, lambda ex: f"The correct answer is {ex.answer!r}.")


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(id=f"{split}-{row['id']}", question=row["question"], answer=row["answer"]).with_inputs(
        "question"
    )


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """HotPotQA's train split feeds train and val; its validation split is the test set (test has no answers)."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.ChainOfThought(AnswerQuestion)


TASK = Task(
    test_split=7_405,
    name="qa", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="exact_match",
    strict=exact_field("answer"),
    expected=("answer",),
)  # fmt: skip
