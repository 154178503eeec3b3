"""BM25 search over a list of passages (bm25s), shared by the tasks whose programs retrieve."""

from __future__ import annotations

import bm25s


class Bm25Index:
    """An in-memory BM25 index; `search` returns the top passages, best first."""

    def __init__(self, passages: tuple[str, ...] | list[str]) -> None:
        self.passages = list(dict.fromkeys(passages))  # unique, first-seen order, so results are deterministic
        self._bm25 = bm25s.BM25()
        if self.passages:
            self._bm25.index(bm25s.tokenize(self.passages, stopwords="en", show_progress=False), show_progress=False)

    def search(self, query: str, k: int = 3) -> list[str]:
        k = min(k, len(self.passages))
        if k == 0 or not query.strip():
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:  # only stopwords: nothing to match
            return []
        ids, scores = self._bm25.retrieve(tokens, k=k, show_progress=False)
        return [self.passages[int(i)] for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
