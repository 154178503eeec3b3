"""BM25 search over a list of passages (bm25s), shared by the tasks whose programs retrieve.

An index depends only on its passages, and every trial of a task on the same data has the same ones (rag: the
~19,000 distinct SQuAD paragraphs; building their index takes about a second). So an index is built once per
node: saved under `$ARB_HOME/cache/bm25/<sha256 of the passages>/` (bm25s's own save format, loaded memory-mapped)
and kept in memory for the next trial of the same worker process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import bm25s

_MEMO: dict[str, Any] = {}
"""The last index built or loaded in this process, by its key (one: the corpus of the trial's task)."""
_MEMO_LOCK = threading.Lock()


def _cache_root() -> Path:
    home = os.environ.get("ARB_HOME")
    return (Path(home) if home else Path("arb-results")).resolve() / "cache" / "bm25"


def corpus_key(passages: list[str]) -> str:
    digest = hashlib.sha256(f"bm25s {bm25s.__version__} stopwords=en\0".encode())
    for passage in passages:
        digest.update(passage.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _build(passages: list[str], key: str, root: Path | None) -> Any:
    """The index of `passages`: from this process's memo, the node's disk cache, or built (and then saved)."""
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    where = root / key if root is not None else None
    retriever = None
    if where is not None and (where / "params.index.json").is_file():
        try:
            retriever = bm25s.BM25.load(str(where), mmap=True, show_progress=False)
        except (OSError, ValueError):  # a damaged entry: build it again
            retriever = None
    if retriever is None:
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
        if where is not None:
            _save(retriever, where)
    with _MEMO_LOCK:
        _MEMO.clear()
        _MEMO[key] = retriever
    return retriever


def _save(retriever: Any, where: Path) -> None:
    """Save atomically: into a temporary directory beside it, then renamed (two trials may build it at once)."""
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}-", dir=where.parent))
        retriever.save(str(tmp), show_progress=False)
        try:
            tmp.rename(where)
        except OSError:  # another trial saved it first: theirs is the same index
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # no room or no permission: the index is still usable, only not cached


class Bm25Index:
    """An in-memory BM25 index; `search` returns the top passages, best first."""

    def __init__(self, passages: tuple[str, ...] | list[str]) -> None:
        self.passages = list(dict.fromkeys(passages))  # unique, first-seen order, so results are deterministic
        self._bm25 = _build(self.passages, corpus_key(self.passages), _cache_root()) if self.passages else None

    def search(self, query: str, k: int = 3) -> list[str]:
        k = min(k, len(self.passages))
        if k == 0 or not query.strip() or self._bm25 is None:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:  # only stopwords: nothing to match
            return []
        ids, scores = self._bm25.retrieve(tokens, k=k, show_progress=False)
        return [self.passages[int(i)] for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
