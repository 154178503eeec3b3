"""CoNLL-2003 named entities (the study's `eriktks/conll2003`, read from a parquet copy).

Input: a sentence (the tokens joined by spaces). Output: a list of entities, each a type (PER, ORG, LOC, MISC)
and the exact text span. Metric: entity-level micro F1, as in the CoNLL-2003 shared task: gold entities are the
spans of the BIO tags; a predicted entity is a true positive when a gold entity of the same type has the same text
(after whitespace squeezing; each gold entity matches at most once). True positives, false positives and false
negatives are summed over all test sentences before F1 is taken (`corpus_metric`); the per-sentence F1 is the
optimizers' signal (`metric`). A sentence with no entities, answered with none, scores 1.

Data: `eriktks/conll2003` still carries `conll2003.py` (its history: "Fix: conll2003 - fix empty example", 331adb7),
which `datasets` 4.0+ refuses. DSPy moved its entity-extraction tutorial to `lhoestq/conll2003` for exactly this
(stanfordnlp/dspy PR #9889, 2026-06-05: "RuntimeError: Dataset scripts are no longer supported, but found
conll2003.py"), and other projects read `features["ner_tags"].feature.names` from it (the BIO ClassLabel). The
pinned commit is the hub's parquet conversion of it (1bbb278, parquet-converter: `lhoestq--conll2003/parquet-
{train,validation,test}.parquet`, 1.23 MB / 312 kB / 283 kB, the sizes of other exact copies; 14,041 / 3,250 /
3,453 sentences).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import dspy
from pydantic import BaseModel

from trainables.tasks.base import HubData, Splits, Task, output_of, scored, versioned

VERSION = "2"
# The dataset's `ner_tags` ClassLabel names in id order.
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
DATA = HubData(
    "lhoestq/conll2003",
    "1bbb27833cfbcdd58cd3e2cafe1285ba415e37b8",
    None,
    sample_dir="conll2003",
    pool_split="train",
    test_split="test",
    columns=("id", "tokens", "ner_tags"),
    labels=(("ner_tags", NER_TAGS),),
)

EntityType = Literal["PER", "ORG", "LOC", "MISC"]


class Entity(BaseModel):
    type: EntityType
    text: str


class ExtractEntities(dspy.Signature):
    """Find the named entities in the sentence: persons (PER), organizations (ORG), locations (LOC) and
    miscellaneous names (MISC), each with its exact text as written in the sentence."""

    sentence: str = dspy.InputField()
    entities: list[Entity] = dspy.OutputField(desc="every entity in order of appearance; [] if there is none")


def bio_spans(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each entity in a BIO-tagged sentence; an `I-` tag without a matching `B-` opens a new one."""
    spans: list[tuple[str, str]] = []
    current: tuple[str, list[str]] | None = None
    for token, tag in zip(tokens, tags, strict=True):
        kind = tag[2:] if tag != "O" else None
        if kind is not None and tag.startswith("I-") and current is not None and current[0] == kind:
            current[1].append(token)
            continue
        if current is not None:
            spans.append((current[0], " ".join(current[1])))
        current = (kind, [token]) if kind is not None else None
    if current is not None:
        spans.append((current[0], " ".join(current[1])))
    return spans


def _predicted(pred: Any, strict: bool = False) -> list[tuple[str, str]]:
    """The reply's (type, text) pairs; forgiving a type's case and the text's spacing unless `strict`."""
    out = []
    for entity in getattr(pred, "entities", None) or []:
        kind, text = (
            (entity.type, entity.text) if isinstance(entity, Entity) else (entity.get("type"), entity.get("text"))
        )
        if kind and text:
            out.append((str(kind), str(text)) if strict else (str(kind).upper(), " ".join(str(text).split())))
    return out


def counts(gold: list[tuple[str, str]], predicted: list[tuple[str, str]]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), matching (type, text) as multisets."""
    tp = sum((Counter(gold) & Counter(predicted)).values())
    return tp, len(predicted) - tp, len(gold) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 from counts; 1.0 when there was nothing to find and nothing was predicted."""
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def _gold(example: dspy.Example) -> list[tuple[str, str]]:
    return [(e["type"], e["text"]) for e in example.entities]


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    """Entity F1 of one sentence."""
    return f1(*counts(_gold(example), _predicted(pred)))


def strict(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    """Entity F1 of one sentence with each (type, text) taken verbatim: a type in another case ("per") or an entity
    text with other spacing no longer matches."""
    return f1(*counts(_gold(example), _predicted(pred, strict=True)))


def feedback(
    example: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """`metric`, with the entities missed and the spurious ones, each with its type."""
    score = metric(example, pred)
    gold, predicted = Counter(_gold(example)), Counter(_predicted(pred))
    entities, missing = output_of(pred, "entities")
    if missing and entities is None:
        return scored(
            score,
            f"{missing} It must be a list of {{type, text}} objects; the gold entities are {_listed(gold) or 'none'}.",
        )
    missed, spurious = _listed(gold - predicted), _listed(predicted - gold)
    if not missed and not spurious:
        return scored(score, f"Correct: every entity found ({_listed(gold) or 'there are none'}).")
    parts = [f"Entity F1 {score:.2f}."]
    if missed:
        parts.append(f"Missed: {missed}.")
    if spurious:
        parts.append(f"Spurious (not gold entities, or wrong type or span): {spurious}.")
    parts.append("Types are PER, ORG, LOC, MISC; the text is the exact span from the sentence.")
    return scored(score, " ".join(parts))


def _listed(entities: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} {text!r}" for (kind, text), n in sorted(entities.items()) for _ in range(n))


def corpus_metric(pairs: list[tuple[dspy.Example, Any]], strict: bool = False) -> float:
    """Entity-level micro F1 over all sentences (None predictions count every gold entity as missed); `strict`:
    entities taken verbatim, as in `strict`."""
    tp = fp = fn = 0
    for example, pred in pairs:
        a, b, c = counts(_gold(example), _predicted(pred, strict))
        tp, fp, fn = tp + a, fp + b, fn + c
    return f1(tp, fp, fn)


def strict_corpus(pairs: list[tuple[dspy.Example, Any]]) -> float:
    """`corpus_metric` on verbatim entities."""
    return corpus_metric(pairs, strict=True)


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    tags = [NER_TAGS[int(t)] for t in row["ner_tags"]]
    return dspy.Example(
        id=f"{split}-{row['id']}",
        sentence=" ".join(row["tokens"]),
        # dicts in Entity's shape, so that labeled demos render like the model's own output
        entities=[{"type": kind, "text": text} for kind, text in bio_spans(row["tokens"], tags)],
    ).with_inputs("sentence")


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """CoNLL-2003's train split feeds train and val; its test split is the reported test set."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.Predict(ExtractEntities)


TASK = Task(
    test_split=3_453,
    name="extraction",
    version=versioned(VERSION, DATA),
    load=load,
    program=program,
    metric=metric,
    corpus_metric=corpus_metric,
    data=(DATA,),
    feedback=feedback,
    metric_name="entity_micro_f1",
    expected=("entities",),
    strict=strict,
    strict_corpus=strict_corpus,
)
