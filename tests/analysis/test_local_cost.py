"""A local model's price per 1,000 calls: its measured seconds per call, shared by the requests that were in flight
at once, at the registry's GPU-hour price (not $0, and not a whole GPU per request)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.routing import per_call_costs
from trainables.registry import ModelEntry, ModelRegistry


def _frames(in_flight: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame([{"run_id": "r1", "model": "local", "task": "math", "optimizer": "mipro", "status": "finished",
                          "eval_in_flight": in_flight}])  # fmt: skip
    examples = pd.DataFrame([{"run_id": "r1", "condition": "optimized", "example_id": str(i), "score": 1.0,
                              "prompt_tokens": 500, "completion_tokens": 150, "latency_ms": 2000.0}
                             for i in range(4)])  # fmt: skip
    return runs, examples


@pytest.mark.parametrize(("in_flight", "usd"), [(1.0, 2.0), (4.0, 0.5), (math.nan, 2.0)])
def test_gpu_seconds_per_call_are_shared_by_the_requests_in_flight(in_flight: float, usd: float) -> None:
    # $3.60 per GPU-hour is $0.001 per GPU-second; 2 s per call is 2,000 s per 1,000 calls alone, 500 s at 4 at once
    registry = ModelRegistry(models={"local": ModelEntry(provider="ollama", id="local", gpu_hour_usd=3.6)})
    costs = per_call_costs(*_frames(in_flight), registry)
    assert costs["usd_per_1k"].tolist() == [pytest.approx(usd)]
    assert costs["latency_s_per_1k"].tolist() == [pytest.approx(2000.0)]
