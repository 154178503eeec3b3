"""What every task provides, and the data plumbing they share (hub or sample files, seeded splits)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from grid.errors import ArbError

DATA_DIR = Path(__file__).with_name("data")

Metric = Callable[..., float]
CorpusMetric = Callable[[list[tuple[dspy.Example, Any]]], float]


@dataclass(frozen=True)
class Splits:
    """Examples for one trial: `train` (optimizer's labeled pool), `val` (candidate scoring), `test` (reported)."""

    train: list[dspy.Example]
    val: list[dspy.Example]
    test: list[dspy.Example]
    corpus: tuple[str, ...] = ()
    """Passages the program may search (rag, agentic); empty for tasks that retrieve nothing."""


@dataclass(frozen=True)
class Task:
    """A task of the study: how to load it, which program solves it, how to score it, and its version."""

    name: str
    version: str
    """Bumped whenever a change could move scores; part of the trial key."""
    load: Callable[..., Splits]
    """`load(source, seed, n_labeled, n_val, n_eval) -> Splits`; data is read only when called."""
    program: Callable[[Splits], dspy.Module]
    """A fresh, unoptimized program; `splits.corpus` is what retrieving programs search."""
    metric: Metric
    """`metric(example, pred, trace=None) -> float in [0, 1]`; what optimizers maximize, per example."""
    corpus_metric: CorpusMetric | None = None
    """For metrics that are not a mean over examples (entity-level micro F1): `corpus_metric([(example, pred), ...])
    -> float in [0, 1]` gives the reported score; `metric` stays the per-example signal for optimizers."""


def load_hf(hub_id: str, config: str | None, source: str, sample_dir: str, split: str) -> list[dict[str, Any]]:
    """Rows of one split: from the Hugging Face hub (`source="hub"`), the shipped sample JSONL files
    (`"sample"`), or JSONL files laid out the same way under another directory (`source` is its path).

    Every path goes through `datasets.load_dataset`, so the sample files exercise the same code as the hub.
    """
    import datasets

    local = None if source == "hub" else (DATA_DIR if source == "sample" else Path(source)) / sample_dir
    try:
        if local is not None:
            path = local / f"{split}.jsonl"
            ds = datasets.load_dataset("json", data_files={split: str(path)}, split=split)
        else:
            ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # datasets raises many types (network, missing config, ...); all mean the same here
        where = f"JSONL files in {local}" if local is not None else f"Hugging Face dataset {hub_id!r}"
        raise ArbError(
            f"cannot load {where} ({split}): {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
            "check network access to the hub, or set `data: sample` in the grid file to use the shipped examples"
            if local is None
            else f"put {split}.jsonl in {local}, or set `data: hub` or `data: sample` in the grid file",
        ) from None
    return [dict(row) for row in ds]


@dataclass(frozen=True)
class HubData:
    """Where a task's data lives: its Hugging Face dataset, the shipped sample folder, and which two splits to use.

    `pool_split` feeds train and val; `test_split` is the reported test set (for datasets whose test split has no
    labels, that is their validation split).
    """

    hub_id: str
    config: str | None
    sample_dir: str
    pool_split: str
    test_split: str

    def rows(self, source: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The raw rows of the pool and test splits."""
        return (
            load_hf(self.hub_id, self.config, source, self.sample_dir, self.pool_split),
            load_hf(self.hub_id, self.config, source, self.sample_dir, self.test_split),
        )

    def splits(
        self, to_example: Callable[[dict[str, Any], int, str], dspy.Example], source: str, seed: int,
        n_labeled: int, n_val: int, n_eval: int, passages: Callable[[dict[str, Any]], Iterable[str]] | None = None,
    ) -> Splits:  # fmt: skip
        """Read both splits, turn rows into examples, and cut them with `seeded_splits`. With `passages`, every
        row of both splits (not only the cut) contributes its passages, de-duplicated, to `Splits.corpus`."""
        pool_rows, test_rows = self.rows(source)
        pool = [to_example(row, i, self.pool_split) for i, row in enumerate(pool_rows)]
        test = [to_example(row, i, self.test_split) for i, row in enumerate(test_rows)]
        cut = seeded_splits(pool, test, seed, n_labeled, n_val, n_eval)
        if passages is None:
            return cut
        corpus = tuple(dict.fromkeys(p for row in pool_rows + test_rows for p in passages(row)))
        return Splits(cut.train, cut.val, cut.test, corpus=corpus)


def seeded_splits(
    pool: list[dspy.Example], test: list[dspy.Example], seed: int, n_labeled: int, n_val: int, n_eval: int
) -> Splits:
    """Deterministic splits: shuffle the pool by seed, take val first, then the `n_labeled` cut of the rest.

    Val is taken first so that growing `n_labeled` only adds training examples and never changes the valset.
    """
    rng = random.Random(seed)
    pool = list(pool)
    rng.shuffle(pool)
    val, train = pool[:n_val], pool[n_val:]
    test = list(test)
    random.Random(seed + 1).shuffle(test)
    return Splits(train=train[:n_labeled], val=val, test=test[:n_eval])
