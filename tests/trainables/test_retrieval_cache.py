"""The BM25 index is built once per node and corpus: later trials load it (or reuse it in the same worker) and
retrieve exactly what a fresh build retrieves."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.tasks import retrieval

PASSAGES = [
    "The Loire is the longest river in France.",
    "Mount Kosciuszko is the highest mountain in Australia.",
    "The Danube flows through ten countries, more than any other river.",
    "Honey never spoils when it is sealed.",
]
QUERIES = ["longest river in France", "highest mountain", "which river crosses most countries", "the the"]


def test_a_cached_index_answers_like_a_fresh_one(arb_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real_index = retrieval.bm25s.BM25.index
    monkeypatch.setattr(
        retrieval.bm25s.BM25, "index", lambda self, *a, **k: (built.append(1), real_index(self, *a, **k))[1]
    )
    fresh = retrieval.Bm25Index(PASSAGES)
    expected = [fresh.search(q, k=2) for q in QUERIES]
    assert expected[0][0] == PASSAGES[0] and expected[-1] == []
    assert len(built) == 1
    stored = list((arb_home / "cache" / "bm25").iterdir())
    assert [p.name for p in stored] == [retrieval.corpus_key(PASSAGES)]

    again = retrieval.Bm25Index(PASSAGES)  # same worker: the memo
    retrieval._MEMO.clear()
    loaded = retrieval.Bm25Index(PASSAGES)  # another worker on the node: the disk cache
    assert len(built) == 1
    for index in (again, loaded):
        assert [index.search(q, k=2) for q in QUERIES] == expected
    other = retrieval.Bm25Index(PASSAGES[:3])  # another corpus: another index
    assert len(built) == 2 and other.search("honey") == []
