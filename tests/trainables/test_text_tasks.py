"""qa (HotPotQA) and analysis (BoolQ): metric case tables and loading the sample files through `datasets`."""

from __future__ import annotations

import pytest

from trainables.tasks.analysis import as_yes_no
from trainables.tasks.text import exact_match, normalize_answer, token_f1

NORMALIZE = [
    ("The Sumida River", "sumida river"),
    ("  A   cat. ", "cat"),
    ("Leonardo da Vinci!", "leonardo da vinci"),
    ("an apple, the pear", "apple pear"),
    ("", ""),
    (None, ""),
    ("U.S.A.", "usa"),
    ("Theater", "theater"),  # 'the' only as a whole word
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZE)
def test_normalize_answer(text: str | None, expected: str) -> None:
    assert normalize_answer(text) == expected


EM = [
    ("Sumida River", "the Sumida River", 1.0),
    ("sumida river.", "Sumida River", 1.0),
    ("Sumida", "Sumida River", 0.0),
    ("1912", "1912", 1.0),
    ("in 1912", "1912", 0.0),
    ("", "yes", 0.0),
    (None, "yes", 0.0),
    ("YES", "yes", 1.0),
]


@pytest.mark.parametrize(("pred", "gold", "score"), EM)
def test_exact_match(pred: str | None, gold: str, score: float) -> None:
    assert exact_match(pred, gold) == score


F1 = [
    ("Sumida River", "Sumida River", 1.0),
    ("Sumida", "Sumida River", 2 / 3),
    ("the river Sumida", "Sumida River", 1.0),
    ("Thames", "Sumida River", 0.0),
    ("", "", 1.0),
    ("", "x", 0.0),
    ("a a a", "a", 1.0),  # articles vanish on both sides
    ("river river", "river", 2 / 3),
]


@pytest.mark.parametrize(("pred", "gold", "score"), F1)
def test_token_f1(pred: str, gold: str, score: float) -> None:
    assert token_f1(pred, gold) == pytest.approx(score)


YES_NO = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("no, it is not", "no"),
    ("True", "yes"),
    ("false", "no"),
    (True, "yes"),
    ("maybe", None),
    ("", None),
    (None, None),
    ("I think yes", None),  # only the first word counts
]


@pytest.mark.parametrize(("text", "expected"), YES_NO)
def test_yes_no(text: object, expected: str | None) -> None:
    assert as_yes_no(text) == expected


DOC = "the council voted on tuesday to close the old library on elm street because repairs cost too much"
SUMMARY_CASES = [
    # (prediction, reference, expected copy ratio, expected score)
    ("The council voted on Tuesday to close the old library on Elm Street.", "Library moves", 1.0, 0.0),
    (
        "Library moves to the station after costly repairs.",
        "Library moves to the station after costly repairs.",
        0.0,
        1.0,
    ),
    ("", "Library moves", 0.0, 0.0),
    (None, "Library moves", 0.0, 0.0),
    (
        "Short copy: the old library",
        "old library closes",
        0.0,
        token_f1("Short copy: the old library", "old library closes"),
    ),
    # 6 copied tokens ("to close the old library on" -> normalized drops 'the': 'to close old library on elm') + 3 own
    (
        "Decided to close the old library on Elm today",
        "library closes",
        6 / 8,
        token_f1("Decided to close the old library on Elm today", "library closes") * (2 / 8),
    ),
    ("Elm Street library to shut over repair costs", "Elm Street library to shut over repair costs", 0.0, 1.0),
    (
        "repairs cost too much so the council voted",
        "council shuts library",
        0.0,
        token_f1("repairs cost too much so the council voted", "council shuts library"),
    ),
]


@pytest.mark.parametrize(("pred", "ref", "ratio", "score"), SUMMARY_CASES)
def test_summary_copy_penalty(pred: str | None, ref: str, ratio: float, score: float) -> None:
    from trainables.tasks.synthesis import copy_ratio, score_summary

    assert copy_ratio(pred, DOC) == pytest.approx(ratio)
    assert score_summary(pred, ref, DOC) == pytest.approx(score)
