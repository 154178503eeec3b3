"""An example's inputs and gold answer, and a prediction's outputs, as JSON: what a trace, its assessments and the
examples table show a reviewer (`{"entities": [{"type": "LOC", "text": "Friday"}]}`, not a Python repr)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import dspy
from pydantic import BaseModel

CELL_CHARS = 2000
"""Longest text kept per value: a document or a passage is cut here in traces and tables."""


def jsonable(value: Any, limit: int = CELL_CHARS) -> Any:
    """`value` as plain JSON types: pydantic models (DSPy's typed outputs) as their fields, containers recursively,
    strings cut at `limit`, anything else as its text."""
    if isinstance(value, str):
        return value[:limit]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"), limit)
    if isinstance(value, dict):
        return {str(k): jsonable(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v, limit) for v in value]
    return str(value)[:limit]


def outputs(pred: Any) -> dict[str, Any]:
    """A prediction's output fields (DSPy's `reasoning` left out: the module's own span keeps it); {} for none."""
    if pred is None:
        return {}
    if hasattr(pred, "items"):
        return {k: jsonable(v) for k, v in pred.items() if k != "reasoning"}
    return {"value": jsonable(pred)}


def inputs(example: dspy.Example) -> dict[str, Any]:
    """The fields the program is called with."""
    return {k: jsonable(v) for k, v in example.inputs().items()}


def gold(example: dspy.Example, names: Iterable[str] = ()) -> dict[str, Any]:
    """The example's reference answer: the fields `names`, or every label but the example id."""
    wanted = tuple(names) or tuple(k for k in example.labels().toDict() if k != "id")
    return {k: jsonable(example.get(k)) for k in wanted if k in example}


def text(fields: dict[str, Any], limit: int = CELL_CHARS) -> str:
    """`fields` as one line of JSON (a table cell), cut at `limit` characters."""
    return json.dumps(fields, ensure_ascii=False)[:limit] if fields else ""
