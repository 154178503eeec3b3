"""Retrieval-augmented QA over SQuAD paragraphs (`rajpurkar/squad`).

Corpus: every distinct paragraph (`context`) of the loaded train and validation splits. Program: BM25 (bm25s)
retrieves the top `TOP_K` paragraphs for the question, then a chain-of-thought step answers from them.
Input: a question. Output: a short answer.

Metric: faithfulness, i.e. whether the answer is supported by the passages the program retrieved (not whether it
matches SQuAD's gold answer). After SQuAD normalization (lower case, no punctuation or articles):
- an empty answer scores 0;
- an answer that occurs as a contiguous run of tokens in one retrieved passage scores 1;
- otherwise the score is the share of the answer's tokens that occur anywhere in the retrieved passages,
  so a stitched or paraphrased answer gets partial credit and an answer with nothing behind it gets 0.
Abstentions ("unknown", "not in the context") usually score 0, because those words are rarely in the passages.

Data: `rajpurkar/squad` has parquet files (`plain_text/train-00000-of-00001.parquet`, …) and no script; pinned at
the commit many other projects pin (7b6d24c; 87,599 train / 10,570 validation).
"""

from __future__ import annotations

from typing import Any

import dspy

from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned
from trainables.tasks.retrieval import Bm25Index
from trainables.tasks.text import normalize_answer

VERSION = "2"
DATA = HubData(
    "rajpurkar/squad",
    "7b6d24c440a36b6815f21b70d25016731768db1f",
    None,
    sample_dir="squad",
    pool_split="train",
    test_split="validation",
    columns=("id", "question", "context", "answers"),
)
TOP_K = 3


class AnswerFromPassages(dspy.Signature):
    """Answer the question using only the passages. Reply with a short span taken from them."""

    passages: list[str] = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a short span from the passages")


class RetrieveThenAnswer(dspy.Module):
    def __init__(self, corpus: tuple[str, ...]) -> None:
        super().__init__()
        self.index = Bm25Index(corpus)
        self.answer = dspy.ChainOfThought(AnswerFromPassages)

    def forward(self, question: str) -> dspy.Prediction:
        passages = self.index.search(question, k=TOP_K)
        pred = self.answer(passages=passages, question=question)
        return dspy.Prediction(answer=pred.answer, passages=passages)


def faithfulness(answer: str | None, passages: list[str]) -> float:
    """How far the answer is supported by the passages (see the module docstring)."""
    tokens = normalize_answer(answer).split()
    if not tokens:
        return 0.0
    normalized = [normalize_answer(p).split() for p in passages]
    n = len(tokens)
    for words in normalized:
        if any(words[i : i + n] == tokens for i in range(len(words) - n + 1)):
            return 1.0
    vocabulary = {w for words in normalized for w in words}
    return sum(t in vocabulary for t in tokens) / n


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    return faithfulness(getattr(pred, "answer", None), list(getattr(pred, "passages", None) or []))


def _explain(example: dspy.Example, pred: Any, answer: Any, score: float) -> str:
    """Which words of the answer the retrieved passages do not contain, and the gold answer."""
    if score == 1.0:
        return "Faithful: the answer appears in the retrieved passages."
    passages = list(getattr(pred, "passages", None) or [])
    seen = {w for p in passages for w in normalize_answer(p).split()}
    unsupported = [t for t in normalize_answer(answer).split() if t not in seen]
    return (
        f"Faithfulness {score:.2f}: the answer is not a span of the retrieved passages"
        + (f"; unsupported words: {', '.join(unsupported[:8])}" if unsupported else "")
        + f". The reference answer is {example.answer!r}; answer with words from the passages."
    )


feedback = feedback_metric(metric, "answer", _explain, lambda ex: f"A supported answer would be {ex.answer!r}.")


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(
        id=f"{split}-{row['id']}", question=row["question"], answer=row["answers"]["text"][0]
    ).with_inputs("question")


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """SQuAD's train split feeds train and val; its validation split is the test set; all paragraphs form the corpus."""
    return DATA.splits(
        _to_example,
        source,
        seed,
        n_labeled,
        n_val,
        n_eval,
        passages=lambda row: [row["context"]],
        passage_columns=("context",),
    )


def program(splits: Splits) -> dspy.Module:
    return RetrieveThenAnswer(splits.corpus)


TASK = Task(
    test_split=10_570,
    name="rag", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="faithfulness",
    strict=exact_field("answer"),
    expected=("answer",),
)  # fmt: skip
