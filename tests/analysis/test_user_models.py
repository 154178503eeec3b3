"""A grid on models that only the user's registry file names (the documented way to add a model): the grid records
their entries as it runs, so `arb status` and `arb report` know them without the file, API models included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from stub_server import StubServer

from analysis.archive import export_grids, import_archive
from analysis.report import write_report
from analysis.runs import grid_status, load_runs
from grid.launch import _remember_spec
from grid.route import Settings, grid_setup, plan_races
from grid.spec import GridSpec, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial


def test_models_named_only_in_the_users_file_are_known_to_the_readers(
    stub: StubServer, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
    shipped = load_registry()
    mine = {
        "models": {
            "my-llama": shipped.get("llama3.2").model_dump(mode="json", exclude_defaults=True),
            "my-api": {
                **shipped.get("gpt-4o").model_dump(mode="json", exclude_defaults=True),
                "input_usd_per_mtok": 1.0,
            },
        }
    }
    path = tmp_path / "my-models.yaml"
    path.write_text(yaml.safe_dump(mine))
    registry = load_registry(path)
    spec = GridSpec(name="mine", phase="test", models=["my-llama", "my-api"], tasks=["math"], optimizer="bootstrap",
                    demos=[2], n_labeled=[6], n_val=3, n_eval=8, data="sample")  # fmt: skip
    exp = tracking.ensure_experiment(tracking_uri, "mine")
    _remember_spec(tracking_uri, exp, spec, str(path), registry)
    endpoints = {"my-llama": stub.url, "my-api": stub.url + "/v1"}
    for trial in expand(spec, registry):
        runtime: dict[str, Any] = {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": endpoints,
                                   "registry": registry.model_dump(mode="json")}  # fmt: skip
        assert execute_trial({"trial": trial.model_dump(), "runtime": runtime})["reused"] == 0.0
    path.unlink()  # later readers have the store only

    status = grid_status(tracking_uri, ["mine"])
    assert status[["trials", "finished"]].values.tolist() == [[2, 2]]
    runs = load_runs(tracking_uri, ["mine"]).set_index("model")
    assert bool(runs.loc["my-api", "api"]) and not bool(runs.loc["my-llama", "api"])
    assert runs["provider"].to_dict() == {"my-llama": "ollama", "my-api": "openai"}
    out = tmp_path / "report"
    write_report(tracking_uri, ["mine"], out, log=False)
    cost = pd.read_csv(out / "runs.csv").set_index("model")
    assert bool(cost.loc["my-api", "api"]) and not bool(cost.loc["my-llama", "api"])

    # `arb route` reads the grid's registry back: the API model is the reference, the local one races it
    setup = grid_setup("mine", tracking_uri, None)
    [race] = plan_races(tracking_uri, ["mine"], setup.registry, Settings())
    assert race.reference.model == "my-api" and [c.model for c in race.candidates] == ["my-llama"]
    # `arb export` carries the grid, its recorded registry included, to another store
    moved = export_grids(tracking_uri, ["mine"], tmp_path / "mine.tar.gz", report=out)
    assert sum(m.runs for m in moved) >= 2
    other = tmp_path / "other.db"
    import_archive(tmp_path / "mine.tar.gz", f"sqlite:///{other}")
    runs = load_runs(f"sqlite:///{other}", ["mine"]).set_index("model")
    assert bool(runs.loc["my-api", "api"]) and not bool(runs.loc["my-llama", "api"])
