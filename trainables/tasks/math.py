"""GSM8K grade-school math (`openai/gsm8k`, config `main`).

Input: a word problem. Output: the final number. Metric: exact match on the number, as in the GSM8K paper:
the gold answer is the number after `####`; the prediction's answer is the last number it contains, with
thousands separators, currency signs and a trailing `.0` removed before comparing.

Data: `openai/gsm8k` has parquet files (`main/train-00000-of-00001.parquet`, …) and no script; pinned at the
commit two other projects pin (740312a; 7,473 train / 1,319 test).
"""

from __future__ import annotations

import re
from typing import Any

import dspy

from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned

VERSION = "2"
DATA = HubData(
    "openai/gsm8k",
    "740312add88f781978c0658806c59bc2815b9866",
    "main",
    sample_dir="gsm8k",
    pool_split="train",
    test_split="test",
    columns=("question", "answer"),
)

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


class SolveMath(dspy.Signature):
    """Solve the grade-school math word problem. Give only the final number as the answer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the final number, digits only")


def normalize_number(text: str | None) -> str | None:
    """The last number in `text` in canonical form ("1,500.00" -> "1500"), or None if it holds no number."""
    if text is None:
        return None
    matches = _NUMBER.findall(str(text).replace("$", "").replace("€", "").replace("£", ""))
    if not matches:
        return None
    raw = matches[-1].replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value)


def gold_answer(answer_field: str) -> str:
    """The GSM8K gold number: what follows `####` in the `answer` field."""
    return normalize_number(answer_field.split("####")[-1]) or ""


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    """1.0 if the last number in the prediction equals the gold number, else 0.0."""
    predicted = normalize_number(getattr(pred, "answer", None))
    return float(predicted is not None and predicted == example.answer)


def _explain(example: dspy.Example, pred: Any, answer: Any, score: float) -> str:
    """The gold number and the number parsed from the reply."""
    predicted = normalize_number(answer)
    if predicted is None:
        return (
            f"The `answer` field ({str(answer)[:80]!r}) holds no number; the correct answer is "
            f"{example.answer}. Put the final number in it."
        )
    if score:
        return f"Correct: the final number {predicted} is the answer."
    return f"The last number in the answer is {predicted}, but the correct answer is {example.answer}."


feedback = feedback_metric(
    metric, "answer", _explain, lambda ex: f"It should end with the final number; the correct answer is {ex.answer}."
)


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(id=f"{split}-{idx}", question=row["question"], answer=gold_answer(row["answer"])).with_inputs(
        "question"
    )


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """GSM8K's train split feeds train and val; its test split is the reported test set."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    """Chain-of-thought, as in the study: reasoning first, then the number."""
    return dspy.ChainOfThought(SolveMath)


TASK = Task(
    test_split=1_319,
    name="math", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="exact_match",
    strict=exact_field("answer"),
    expected=("answer",),
)  # fmt: skip
