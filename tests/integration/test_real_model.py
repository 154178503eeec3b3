"""A real embedded model (SmolLM2 via llama.cpp) through a whole trial, asserting the MLflow record.

Kept small (2 test examples, 2 labeled): about a minute on 2 cores. Select with `-m real_model`.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from grid.embedded import serve_embedded
from grid.spec import GridSpec, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

pytestmark = pytest.mark.real_model


def test_smollm2_trial_end_to_end(tmp_path: Path, tracking_uri: str) -> None:
    registry = load_registry()
    spec = GridSpec(
        name="real", phase="test", models=["smollm2"], tasks=["math"], optimizer="bootstrap", demos=[1],
        n_labeled=[2], n_val=1, n_eval=2, data="sample",
    )  # fmt: skip
    [trial] = expand(spec, registry)
    experiment_id = tracking.ensure_experiment(tracking_uri, spec.name)
    with serve_embedded(["smollm2"], registry, tmp_path / "logs", base_port=8795) as servers:
        metrics = execute_trial(
            {
                "trial": trial.model_dump(),
                "runtime": {
                    "tracking_uri": tracking_uri,
                    "experiment_id": experiment_id,
                    "endpoints": servers.endpoints,
                    "timeouts": servers.timeouts,
                },
            }
        )
    log = (tmp_path / "logs" / "llama-server-smollm2.log").read_text()
    assert log.count("processing task") >= 4, log[-2000:]  # llama-server's slots did the calls, not a cache
    assert metrics["lm_calls"] >= 4 and metrics["prompt_tokens"] > 100 and metrics["completion_tokens"] > 0
    assert 0.0 <= metrics["baseline_score"] <= 100.0 and metrics["latency_ms_p50"] > 0

    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, experiment_id, trial.key)
    assert run.data.tags["arb.status"] in ("finished", "compile_failed")
    assert run.data.params["model"] == "smollm2" and run.data.params["n_eval"] == "2"
    assert run.data.metrics["lm_calls"] == metrics["lm_calls"]
    table = pd.read_csv(io.StringIO(Path(client.download_artifacts(run.info.run_id, "examples.csv")).read_text()))
    assert len(table) == 4 and set(table["condition"]) == {"baseline", "optimized"}
    assert table.loc[table.condition == "baseline", "score"].mean() * 100 == pytest.approx(metrics["baseline_score"])
