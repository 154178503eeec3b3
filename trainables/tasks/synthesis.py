"""XSum one-sentence summaries (`EdinburghNLP/xsum`, its parquet conversion).

Input: a news document. Output: a one-sentence summary. Metric: token F1 against the reference summary (SQuAD
normalization), multiplied by (1 − copy ratio). XSum summaries are abstractive, so a prediction that lifts long
stretches of the document verbatim is penalized: the copy ratio is the share of the prediction's tokens that lie
inside some run of `COPY_NGRAM` (6) or more consecutive tokens also found in the document. A pure copy scores 0;
a paraphrase that shares words but no 6-token run keeps its full F1.

Data: the main branch of `EdinburghNLP/xsum` still holds `xsum.py`, which `datasets` 4.0+ refuses; the hub's
own conversion of the same repository lives on its `refs/convert/parquet` branch, which other projects load with
`revision="refs/convert/parquet"`. Pinned to that branch's commit 5484b35 (parquet-converter, "Update parquet
files": `default/xsum-{train,validation,test}.parquet`, 304 MB / 16.7 MB / 17.0 MB; 204,045 / 11,332 / 11,334).
"""

from __future__ import annotations

from typing import Any

import dspy

from trainables.tasks.base import HubData, Splits, Task, feedback_metric, versioned
from trainables.tasks.text import normalize_answer, token_f1

VERSION = "2"
DATA = HubData(
    "EdinburghNLP/xsum",
    "5484b3547a597693f9c099954c1cd6a8192a4573",
    None,
    sample_dir="xsum",
    pool_split="train",
    test_split="test",
    columns=("document", "summary", "id"),
)
COPY_NGRAM = 6


class Summarize(dspy.Signature):
    """Summarize the news article in one sentence, in your own words."""

    document: str = dspy.InputField()
    summary: str = dspy.OutputField(desc="one sentence")


def copy_ratio(prediction: str | None, document: str) -> float:
    """Share of prediction tokens covered by a run of >= COPY_NGRAM tokens that also occurs in the document."""
    pred, doc = normalize_answer(prediction).split(), normalize_answer(document).split()
    if len(pred) < COPY_NGRAM:
        return 0.0
    doc_grams = {tuple(doc[i : i + COPY_NGRAM]) for i in range(len(doc) - COPY_NGRAM + 1)}
    covered = [False] * len(pred)
    for i in range(len(pred) - COPY_NGRAM + 1):
        if tuple(pred[i : i + COPY_NGRAM]) in doc_grams:
            covered[i : i + COPY_NGRAM] = [True] * COPY_NGRAM
    return sum(covered) / len(pred)


def score_summary(prediction: str | None, reference: str, document: str) -> float:
    """Token F1 against the reference, scaled down by how much of the prediction is copied from the document."""
    return token_f1(prediction, reference) * (1.0 - copy_ratio(prediction, document))


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    return score_summary(getattr(pred, "summary", None), example.summary, example.document)


def _explain(example: dspy.Example, pred: Any, summary: Any, score: float) -> str:
    """The metric's two parts: token F1 against the reference and the share copied from the document."""
    f1, copied = token_f1(summary, example.summary), copy_ratio(summary, example.document)
    return (
        f"Score {score:.2f} = token F1 {f1:.2f} against the reference × (1 − copied {copied:.2f}): "
        f"{copied:.0%} of the summary repeats runs of {COPY_NGRAM}+ words from the document. "
        f"The reference summary is {example.summary!r}."
    )


feedback = feedback_metric(metric, "summary", _explain, lambda ex: f"The reference summary is {ex.summary!r}.")


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(id=f"{split}-{row['id']}", document=row["document"], summary=row["summary"]).with_inputs(
        "document"
    )


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """XSum's train split feeds train and val; its test split is the reported test set."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.Predict(Summarize)


TASK = Task(
    test_split=11_334,
    name="synthesis", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="copy_penalized_token_f1",
    expected=("summary",),
)  # fmt: skip
