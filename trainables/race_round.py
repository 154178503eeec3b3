"""One piece of a routing race's round, as it runs on a node: a trial's program scored on a slice of its task's
test examples, in the seeded order the trial itself used (its first `n_eval` examples are the trial's own).

`score_slice(piece, runtime)` is what `grid.route` sends to the node that serves the piece's model. It loads the
trial's saved program (`program.json`, the state its logged model holds) into a fresh program of the task,
builds the model's LM as a trial does (the node's Ollama, the driver's embedded server, or the API; the node's LM
cache, so a repeated piece pays no call twice), and returns each example's outcome.
"""

from __future__ import annotations

from typing import Any

import dspy
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from trainables import ablation
from trainables.evaluate import evaluate
from trainables.lm import adapters
from trainables.lm import cache as lm_cache
from trainables.lm.client import build_lm, drop_meter, new_meter
from trainables.record import tracking
from trainables.tasks import get_task
from trainables.trial import Runtime, endpoint_for
from trainables.vocabulary import Scoring


class Piece(BaseModel):
    """Which program scores which examples: the trial run that holds it, and positions [start, stop) of its task's
    seeded test order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    model: str
    task: str
    data: str
    seed: int
    n_val: int = Field(ge=1)
    structured: bool = False
    scoring: Scoring = "headline"
    start: int = Field(ge=0)
    stop: int = Field(gt=0)
    lm_cache: bool = True
    concurrency: int = Field(default=1, ge=1)


def score_slice(piece: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """Score the piece; returns `example_id`, `score`, `latency_ms`, `prompt_tokens`, `completion_tokens` (one
    entry per example, in order) and `lm_calls`."""
    p = Piece.model_validate(piece)
    rt = Runtime.model_validate(runtime)
    registry = rt.model_registry()
    entry = registry.get(p.model)
    task = get_task(p.task).with_scoring(p.scoring)
    splits = task.load(p.data, p.seed, 0, p.n_val, p.stop)
    examples = splits.test[p.start : p.stop]
    client = MlflowClient(rt.tracking_uri)
    program = ablation.load_program(client, client.get_run(p.run_id), task.program(splits))
    lm_cache.install(tracking.default_home() / "cache" / "lm" if p.lm_cache else None)
    meter_name = f"race-{p.run_id}-{p.start}"
    new_meter(meter_name)
    try:
        lm = build_lm(entry, meter=meter_name, role="student", at=endpoint_for(rt, p.model, entry))
        with dspy.context(adapter=adapters.adapter(p.structured)):
            result = evaluate(program, examples, task, lm=lm, condition="race", concurrency=p.concurrency)
    finally:
        drop_meter(meter_name)
    records = result.records
    return {
        "example_id": [r.example_id for r in records],
        "score": [float(r.score) for r in records],
        "latency_ms": [float(r.latency_ms) for r in records],
        "prompt_tokens": [int(r.prompt_tokens) for r in records],
        "completion_tokens": [int(r.completion_tokens) for r in records],
        "lm_errors": int(result.lm_errors),
        "lm_calls": int(sum(r.lm_calls for r in records)),
    }
