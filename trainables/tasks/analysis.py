"""BoolQ reading comprehension (`google/boolq`).

Input: a passage and a yes/no question about it. Output: yes or no. Metric: accuracy, where the prediction is
read as yes/no from its first word (also accepting true/false), and anything else counts as wrong.

Data: `google/boolq` has parquet files (`data/train-00000-of-00001.parquet`, …) and no script; pinned at the commit
other projects download those files from (35b264d; 9,427 train / 3,270 validation).
"""

from __future__ import annotations

from typing import Any, Literal

import dspy

from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned
from trainables.tasks.text import normalize_answer

VERSION = "2"
DATA = HubData(
    "google/boolq",
    "35b264d03638db9f4ce671b711558bf7ff0f80d5",
    None,
    sample_dir="boolq",
    pool_split="train",
    test_split="validation",
    columns=("question", "answer", "passage"),
)
_YES, _NO = {"yes", "true"}, {"no", "false"}


class AnswerYesNo(dspy.Signature):
    """Read the passage and answer the question about it with yes or no."""

    passage: str = dspy.InputField()
    question: str = dspy.InputField()
    answer: Literal["yes", "no"] = dspy.OutputField()


def as_yes_no(text: Any) -> str | None:
    """ "yes" or "no" from a model's answer (first word, true/false accepted), or None if it is neither."""
    if isinstance(text, bool):
        return "yes" if text else "no"
    words = normalize_answer(None if text is None else str(text)).split()
    if not words:
        return None
    return "yes" if words[0] in _YES else "no" if words[0] in _NO else None


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    return float(as_yes_no(getattr(pred, "answer", None)) == example.answer)


def explain_yes_no(example: dspy.Example, pred: Any, answer: Any, score: float) -> str:
    """Feedback for a yes/no answer (BoolQ here, StrategyQA in `agentic`): the gold answer, and whether the reply
    was a yes or a no at all."""
    said = as_yes_no(answer)
    if said is None:
        return (
            f"The `answer` field ({str(answer)[:80]!r}) is neither yes nor no; the correct answer "
            f"is {example.answer}. Start the answer with yes or no."
        )
    if score:
        return f"Correct: {example.answer}."
    return f"Answered {said}, but the correct answer is {example.answer}."


feedback = feedback_metric(metric, "answer", explain_yes_no, lambda ex: f"The correct answer is {ex.answer}.")


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(
        id=f"{split}-{idx}", passage=row["passage"], question=row["question"], answer="yes" if row["answer"] else "no"
    ).with_inputs("passage", "question")


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """BoolQ's train split feeds train and val; its validation split is the test set."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.Predict(AnswerYesNo)


TASK = Task(
    test_split=3_270,
    name="analysis", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="accuracy",
    strict=exact_field("answer"),
    expected=("answer",),
)  # fmt: skip
