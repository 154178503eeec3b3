"""The nine tasks: every sample file loads through `datasets` into disjoint, seeded splits, a gold prediction
scores 1, and the metrics of classification, extraction, rag, agentic and code hold their case tables."""

from __future__ import annotations

from typing import Any

import dspy
import pytest

from trainables.tasks import TASKS
from trainables.tasks.agentic import make_tools
from trainables.tasks.base import Splits
from trainables.tasks.classification import LABELS, canonical_label
from trainables.tasks.code import extract_code, passes
from trainables.tasks.extraction import bio_spans, corpus_metric, counts, f1
from trainables.tasks.extraction import metric as entity_f1
from trainables.tasks.rag import faithfulness
from trainables.tasks.retrieval import Bm25Index

GOLD_FIELD = {"math": "answer", "qa": "answer", "analysis": "answer", "agentic": "answer", "synthesis": "summary",
              "classification": "label", "extraction": "entities", "code": "code"}  # fmt: skip


def gold_prediction(task: str, example: dspy.Example, splits: Splits) -> dspy.Prediction:
    if task == "rag":
        passages = TASKS["rag"].program(splits).index.search(example.question)  # type: ignore[attr-defined]
        return dspy.Prediction(answer=example.answer, passages=passages)
    return dspy.Prediction(**{GOLD_FIELD[task]: example[GOLD_FIELD[task]]})


def test_registry_has_the_nine_tasks() -> None:
    assert sorted(TASKS) == sorted(
        ["classification", "math", "qa", "extraction", "analysis", "synthesis", "agentic", "rag", "code"]
    )
    assert all(t.version for t in TASKS.values())


@pytest.mark.parametrize("task", sorted(TASKS))
def test_sample_files_load_with_disjoint_seeded_splits(task: str) -> None:
    splits = TASKS[task].load("sample", seed=0, n_labeled=4, n_val=2, n_eval=5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 5)
    ids = [e.id for e in splits.train + splits.val + splits.test]
    assert len(set(ids)) == len(ids)
    again = TASKS[task].load("sample", seed=0, n_labeled=4, n_val=2, n_eval=5)
    assert [e.id for e in again.test] == [e.id for e in splits.test]
    other = TASKS[task].load("sample", seed=1, n_labeled=4, n_val=2, n_eval=5)
    assert [e.id for e in other.train + other.val] != [e.id for e in splits.train + splits.val]
    more = TASKS[task].load("sample", seed=0, n_labeled=6, n_val=2, n_eval=5)
    assert [e.id for e in more.train[:4]] == [e.id for e in splits.train]  # growing n_labeled only adds
    gold = splits.test[0]
    assert TASKS[task].metric(gold, gold_prediction(task, gold, splits)) == 1.0
    assert TASKS[task].metric(gold, None) == 0.0 or task == "extraction"


LABEL_CASES = [
    ("card_arrival", "card_arrival"),
    ("Card arrival", "card_arrival"),
    ("card-arrival", "card_arrival"),
    ("  'card_arrival'. ", "card_arrival"),
    ("refund_not_showing_up", "Refund_not_showing_up"),
    ("reverted_card_payment", "reverted_card_payment?"),
    ("reverted_card_payment?", "reverted_card_payment?"),
    ("card arrived", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "label"), LABEL_CASES)
def test_classification_label_matching(text: str | None, label: str | None) -> None:
    assert len(LABELS) == len(set(LABELS)) == 77
    assert canonical_label(text) == label


BIO_CASES = [
    (["Ann", "Lee", "met", "Bo"], ["B-PER", "I-PER", "O", "B-PER"], [("PER", "Ann Lee"), ("PER", "Bo")]),
    (["New", "York", "Times"], ["B-ORG", "I-ORG", "I-ORG"], [("ORG", "New York Times")]),
    (["in", "Paris", "London"], ["O", "B-LOC", "B-LOC"], [("LOC", "Paris"), ("LOC", "London")]),
    (["a", "b"], ["O", "O"], []),
    (["x", "Rome"], ["O", "I-LOC"], [("LOC", "Rome")]),  # I- without B- opens an entity (conlleval)
    (["EU", "Rome"], ["B-ORG", "I-LOC"], [("ORG", "EU"), ("LOC", "Rome")]),  # type change splits
    (["French", "wine"], ["B-MISC", "O"], [("MISC", "French")]),
    ([], [], []),
]


@pytest.mark.parametrize(("tokens", "tags", "spans"), BIO_CASES)
def test_bio_spans(tokens: list[str], tags: list[str], spans: list[tuple[str, str]]) -> None:
    assert bio_spans(tokens, tags) == spans


def _entities(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"type": t, "text": x} for t, x in pairs]


ENTITY_CASES: list[tuple[list[tuple[str, str]], Any, float]] = [
    ([("PER", "Ann Lee")], _entities(("PER", "Ann Lee")), 1.0),
    ([("PER", "Ann Lee")], _entities(("ORG", "Ann Lee")), 0.0),  # wrong type
    ([("PER", "Ann Lee")], _entities(("PER", "Ann")), 0.0),  # partial span
    ([("PER", "Ann Lee"), ("LOC", "Rome")], _entities(("PER", "Ann Lee")), 2 / 3),
    ([("LOC", "Rome")], _entities(("LOC", "Rome"), ("LOC", "Rome")), 2 / 3),  # a gold entity matches once
    ([], [], 1.0),
    ([], _entities(("LOC", "Rome")), 0.0),
    ([("LOC", "Rome")], [], 0.0),
    ([("LOC", "New York")], _entities(("loc", " New   York ")), 1.0),  # type case and whitespace forgiven
]


@pytest.mark.parametrize(("gold", "predicted", "score"), ENTITY_CASES)
def test_entity_f1_per_sentence(gold: list[tuple[str, str]], predicted: Any, score: float) -> None:
    example = dspy.Example(entities=_entities(*gold))
    assert entity_f1(example, dspy.Prediction(entities=predicted)) == pytest.approx(score)


def test_entity_micro_f1_sums_counts_over_sentences() -> None:
    """Micro F1 is not the mean of sentence F1s: 1 sentence with 3 hits and 1 with 1 miss."""
    big = dspy.Example(entities=_entities(("PER", "A"), ("PER", "B"), ("PER", "C")))
    small = dspy.Example(entities=_entities(("LOC", "D")))
    pairs = [(big, dspy.Prediction(entities=big.entities)), (small, dspy.Prediction(entities=[]))]
    assert corpus_metric(pairs) == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # 6/7, while the mean would be 0.5
    assert corpus_metric([(small, None)]) == 0.0
    assert counts([("PER", "A")], [("PER", "A"), ("ORG", "X")]) == (1, 1, 0)
    assert f1(0, 0, 0) == 1.0


PASSAGES = ["The ferry crosses Lake Verno twice a day between Asby and Kell.", "The lake is 140 metres deep."]
FAITH_CASES = [
    ("twice a day", 1.0),
    ("Twice a day.", 1.0),  # normalization
    ("Asby and Kell", 1.0),
    ("140 metres", 1.0),
    ("Kell and Asby", 1.0 * 2 / 2),  # every token supported, not contiguous: token share = 2/2 ("and" included)
    ("twice a week", 1 / 2),  # "twice" supported, "week" not ("a" is dropped)
    ("three times daily", 0.0),
    ("", 0.0),
    (None, 0.0),
    ("the", 0.0),  # only an article: empty after normalization
]


@pytest.mark.parametrize(("answer", "score"), FAITH_CASES)
def test_rag_faithfulness(answer: str | None, score: float) -> None:
    assert faithfulness(answer, PASSAGES) == pytest.approx(score)
    assert faithfulness(answer, []) == 0.0


def test_rag_program_retrieves_the_answer_paragraph() -> None:
    splits = TASKS["rag"].load("sample", seed=0, n_labeled=4, n_val=2, n_eval=6)
    index = Bm25Index(splits.corpus)
    hits = sum(any(e.answer in p for p in index.search(e.question)) for e in splits.test)
    assert hits >= 5  # BM25 finds the paragraph holding the answer for nearly all sample questions


def test_agentic_tools_work_offline() -> None:
    search, calculate = make_tools(Bm25Index(["A leap year has 366 days.", "Penguins cannot fly."]))
    assert "366" in search(query="days in a leap year")
    assert search(query="zebra") == "no matching facts"
    assert calculate(expression="3 * 12 > 30") == "True"
    assert calculate(expression="366 - 365") == "1"
    assert calculate(expression="__import__('os').system('true')").startswith("error:")
    assert calculate(expression="open('/etc/passwd')").startswith("error:")


FENCE_CASES = [
    ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
    ("Here:\n```py\nx = 1\n```\nDone.", "x = 1"),
    ("```\ny = 2\n```", "y = 2"),
    ("def g(): pass", "def g(): pass"),
    ("```python\nunclosed = 3\n", "unclosed = 3"),
    ("```Python\nz = 0\n```\n```python\nw = 1\n```", "z = 0"),  # the first fence wins
    ("", ""),
    (None, ""),
]


@pytest.mark.parametrize(("text", "code"), FENCE_CASES)
def test_extract_code(text: str | None, code: str) -> None:
    assert extract_code(text) == code


HE_EXAMPLE = dspy.Example(
    preamble='def add(a, b):\n    """Add."""\n',
    tests="def check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)",
)
CODE_CASES = [
    ("def add(a, b):\n    return a + b", True),  # a full function
    ("    return a + b", True),  # a bare body completes the prompt
    ("```python\ndef add(a, b):\n    return a + b\n```", True),
    ("def add(a, b):\n    return a - b", False),  # wrong
    ("def add(a, b):\n    return a +", False),  # syntax error
    ("", False),
    ("import sys\nsys.exit(0)\n", False),  # exiting early skips the tests: must not pass
    ("import os\nos._exit(0)\n", False),
    ("def add(a, b):\n    while True: pass", False),  # timeout
]


@pytest.mark.parametrize(("code", "ok"), CODE_CASES)
def test_code_pass_at_1(code: str, ok: bool) -> None:
    assert passes(code, HE_EXAMPLE) is ok
