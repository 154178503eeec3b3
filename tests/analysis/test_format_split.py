"""A store in which optimization only teaches the model to drop units from its numeric answers: real trials over
HTTP against the stub server, then `arb report` reading the store. The report must attribute the whole strict
gain to format and show no skill gain; a grid scored strictly reports the strict score as its headline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer, chat_adapter_reply, requested_output_fields

from analysis.report import write_report
from grid.spec import GridSpec, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.tasks import math as math_task
from trainables.trial import execute_trial


def unit_responder(answers: dict[str, str]) -> Any:
    """Right on every question; "18 dollars" without demos in the prompt, "18" once demos show the bare form."""

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        last = str(messages[-1].get("content", "")) if messages else ""
        answer = next((a for q, a in answers.items() if q in last), "0")
        has_demos = len(messages) > 2  # ChatAdapter sends each demo as a user/assistant pair
        fields = requested_output_fields(messages) or ["answer"]
        value = answer if has_demos else f"{answer} dollars"
        return chat_adapter_reply({f: (value if f == "answer" else "stub reasoning") for f in fields})

    return respond


def _grid(name: str, scoring: str) -> GridSpec:
    return GridSpec(name=name, phase="test", models=["llama3.2"], tasks=["math"], optimizer="bootstrap", demos=[2],
                    n_labeled=[6], n_val=3, n_eval=8, data="sample", scoring=scoring)  # fmt: skip


def _run(spec: GridSpec, uri: str, url: str) -> dict[str, float]:
    [trial] = expand(spec, load_registry())
    exp = tracking.ensure_experiment(uri, spec.name)
    client = MlflowClient(uri)
    client.set_experiment_tag(exp, "arb.grid_spec", spec.model_dump_json())
    config = {"trial": trial.model_dump(), "runtime": {"tracking_uri": uri, "experiment_id": exp,
                                                      "endpoints": {"llama3.2": url}}}  # fmt: skip
    return execute_trial(config)


@pytest.fixture()
def unit_stub() -> Any:
    splits = math_task.load("sample", seed=0, n_labeled=6, n_val=3, n_eval=8)
    answers = {ex.question: ex.answer for ex in splits.train + splits.val + splits.test}
    with StubServer(["llama3.2"], unit_responder(answers)) as server:
        yield server


def test_a_gain_from_dropping_units_is_format_not_skill(
    unit_stub: StubServer, tracking_uri: str, tmp_path: Path
) -> None:
    metrics = _run(_grid("units", "headline"), tracking_uri, unit_stub.url)
    # the task's metric credits "18 dollars": no gain; the strict score sees 0 → 100
    assert (metrics["baseline_score"], metrics["optimized_score"]) == (100.0, 100.0)
    assert (metrics["baseline_strict"], metrics["optimized_strict"]) == (0.0, 100.0)

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("units").experiment_id],
                               filter_string="tags.`arb.trial_key` != ''")  # fmt: skip
    table = pd.read_csv(io.StringIO(Path(client.download_artifacts(run.info.run_id, "examples.csv")).read_text()))
    assert {"score", "strict_score"} <= set(table.columns)
    assert table.loc[table.condition == "baseline", "strict_score"].eq(0).all()

    out = tmp_path / "report"
    write_report(tracking_uri, ["units"], out, log=False)
    [row] = pd.read_csv(out / "format.csv").to_dict("records")
    assert row["strict_delta_pp"] == pytest.approx(100.0) and row["format_pp"] == pytest.approx(100.0)
    assert row["skill_pp"] == pytest.approx(0.0) and row["format_share"] == pytest.approx(1.0)
    assert row["format"] == "gain" and row["skill"] == "not shown"
    assert row["format_ci_low"] > 0 and row["skill_ci_low"] < 0 < row["skill_ci_high"]
    summary = (out / "summary.md").read_text()
    assert "## Format or skill" in summary
    assert "Format or skill" in (out / "dashboard" / "deltas.html").read_text()


def test_strict_scoring_reports_the_strict_score_as_the_headline(unit_stub: StubServer, tracking_uri: str) -> None:
    metrics = _run(_grid("units-strict", "strict"), tracking_uri, unit_stub.url)
    assert (metrics["baseline_score"], metrics["optimized_score"]) == (0.0, 100.0)
    assert metrics["delta_pp"] == 100.0
    headline, strict = (expand(_grid("g", s), load_registry())[0] for s in ("headline", "strict"))
    assert headline.key != strict.key and strict.run_name.endswith("· strict")
