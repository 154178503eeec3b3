"""`arb report`: files written, the MLflow round trip, and the dashboard rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from synthetic import binary, paired_examples, study_runs

from analysis.report import TITLES, render, write_report
from analysis.runs import EXAMPLE_COLUMNS
from grid.spec import GridSpec
from trainables.record import tracking
from trainables.registry import load_registry


def _study_examples(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-example tables consistent with each run's scores (rounded to whole examples of 50)."""
    frames = []
    for run in runs.itertuples():
        right = [min(50, max(0, round(s / 2))) for s in (run.baseline_score, run.optimized_score)]
        frames.append(paired_examples(run.run_id, binary(50, right[0]), binary(50, right[1])))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    runs = study_runs()
    render(runs, _study_examples(runs), load_registry(), out)
    return out


def test_report_files(report_dir: Path) -> None:
    summary = (report_dir / "summary.md").read_text()
    for title in TITLES.values():
        assert f"## {title}" in summary
    per_model = pd.read_csv(report_dir / "per_model.csv", index_col=[0, 1])
    assert per_model.loc[("mipro", "qwen2.5:7b"), "improved"] == 8
    assert (report_dir / "delta_matrix.png").stat().st_size > 10_000
    routing = pd.read_csv(report_dir / "routing.csv")
    assert len(routing) == 9 and set(routing["route_to"]) <= {
        "llama3.2",
        "mistral",
        "phi4",
        "qwen2.5:7b",
        "gpt-4o",
        "gpt-5.2",
    }
    assert set(routing["decision"]) <= {"route", "keep reference", "undecided"} and set(routing["margin_pp"]) == {5.0}
    candidates = pd.read_csv(report_dir / "routing_candidates.csv")
    assert (candidates.groupby("task")["verdict"].apply(lambda v: (v == "reference").sum()) == 1).all()
    assert (report_dir / "routing.png").stat().st_size > 10_000
    gateway = yaml.safe_load((report_dir / "routing.litellm.yaml").read_text())
    routed = {e["model_name"].removeprefix("arb/") for e in gateway["model_list"]}
    assert routed == set(routing["task"])
    for page in ("index.html", "deltas.html", "phases.html"):
        html = (report_dir / "dashboard" / page).read_text()
        assert "cdn" not in html.lower() and '<script src="plotly.min.js">' in html
        for head in re.findall(r"<thead>(.*?)</thead>", html, re.DOTALL):
            assert head.count("<tr") == 1  # a named index used to print a second, empty header row
    # deltas are drawn with their paired 95% CI: the overview's per-model bars and every delta
    assert '"error_y"' in (report_dir / "dashboard" / "index.html").read_text()
    assert (report_dir / "dashboard" / "deltas.html").read_text().count('"error_y"') >= 1


def test_write_report_reads_mlflow_and_logs_the_report(tmp_path: Path, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    exp_id = tracking.ensure_experiment(tracking_uri, "g")
    spec = GridSpec(name="g", models=["llama3.2", "gpt-4o"], tasks=["math"])
    client.set_experiment_tag(exp_id, "arb.grid_spec", spec.model_dump_json())
    for model, right in (("llama3.2", 30), ("gpt-4o", 35)):
        run = client.create_run(exp_id, tags={"arb.trial_key": model, "arb.status": "finished", "arb.phase": "1"})
        for k, v in {"model": model, "task": "math", "optimizer": "mipro", "n_eval": "50"}.items():
            client.log_param(run.info.run_id, k, v)
        for k, v in {"baseline_score": 40.0, "optimized_score": 2.0 * right, "delta_pp": 2.0 * right - 40}.items():
            client.log_metric(run.info.run_id, k, v)
        with tempfile.TemporaryDirectory() as tmp:
            paired_examples(run.info.run_id, binary(50, 20), binary(50, right)).to_csv(
                f"{tmp}/examples.csv", index=False
            )
            client.log_artifact(run.info.run_id, f"{tmp}/examples.csv")
    out = tmp_path / "out"
    write_report(tracking_uri, ["g"], out)
    sig = pd.read_csv(out / "significance.csv").set_index("model")
    assert sig.loc["llama3.2", "delta_pp"] == pytest.approx(20.0) and sig.loc["llama3.2", "verdict"] == "improved"
    [report_run] = client.search_runs([exp_id], filter_string="tags.`arb.kind` = 'report'")
    logged = {a.path for a in client.list_artifacts(report_run.info.run_id, "report")}
    assert "report/summary.md" in logged
    # the report run is not a trial: a second report still sees exactly the two trial runs
    write_report(tracking_uri, ["g"], out)
    assert len(pd.read_csv(out / "runs.csv")) == 2


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"
)


def _chromium(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@needs_chromium
def test_dashboard_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium(tmp_path)
    try:
        expected_charts = {"index.html": 1, "deltas.html": 1, "phases.html": 0}
        for page, min_charts in expected_charts.items():
            driver.get((report_dir / "dashboard" / page).as_uri())
            WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
            charts = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")
            assert len(charts) >= min_charts, page
            assert driver.execute_script("return typeof Plotly") == "object"
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == [], errors
        driver.get((report_dir / "dashboard" / "deltas.html").as_uri())
        cells = driver.execute_script(
            "return document.querySelectorAll('#delta-matrix .heatmaplayer, #delta-matrix image').length"
        )
        assert cells >= 1
    finally:
        driver.quit()


@needs_chromium
def test_phase_page_of_smoke_shaped_runs_shows_labeled_ablation_and_low_data_charts(tmp_path: Path) -> None:
    """Issue 17: runs with no phase 3/5 label (the smoke's) still fill both charts, and each series is named."""
    from selenium.webdriver.support.ui import WebDriverWait
    from test_tables import _smoke_shaped_runs

    out = tmp_path / "report"
    render(_smoke_shaped_runs(), pd.DataFrame(columns=EXAMPLE_COLUMNS), load_registry(), out)
    driver = _chromium(tmp_path)
    try:
        driver.get((out / "dashboard" / "phases.html").as_uri())
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
        for chart, label in (("demo-curves", "qwen-coder-1.5b · math"), ("low-data", "qwen-coder-1.5b · math")):
            legend = driver.execute_script(
                f"return Array.from(document.querySelectorAll('#{chart} .legendtext')).map(e => e.textContent)"
            )
            assert any(label in text for text in legend), (chart, legend)
    finally:
        driver.quit()


def _log_trial_run(client: MlflowClient, exp: str, key: str, status: str, scores: list[float]) -> str:
    run = client.create_run(exp, tags={"arb.trial_key": key, "arb.status": status, "arb.phase": "1"})
    client.log_batch(run.info.run_id, params=[], metrics=[])
    for name, value in (("model", "llama3.2"), ("task", "math"), ("optimizer", "mipro")):
        client.log_param(run.info.run_id, name, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "examples.csv"
        paired_examples(key, scores, scores).drop(columns=["run_id"]).to_csv(path, index=False)
        client.log_artifact(run.info.run_id, str(path))
    return str(run.info.run_id)


def test_report_cache_fetches_only_what_is_new_or_not_done(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis import runs as runs_module
    from analysis.runs import ReportCache, load_study

    exp = tracking.ensure_experiment(tracking_uri, "cached")
    client = MlflowClient(tracking_uri)
    client.set_experiment_tag(exp, "arb.grid_spec", GridSpec(name="cached", models=["llama3.2"], tasks=["math"])
                              .model_dump_json())  # fmt: skip
    done = _log_trial_run(client, exp, "a", "finished", [1.0, 0.0])
    running = _log_trial_run(client, exp, "b", "running", [0.0, 0.0])
    fetched: list[set[str]] = []
    real_fetch = runs_module._fetch_examples

    def counting(uri: str, artifact_uris: dict[str, str], threads: int) -> pd.DataFrame:
        fetched.append(set(artifact_uris))
        return real_fetch(uri, artifact_uris, threads)

    monkeypatch.setattr(runs_module, "_fetch_examples", counting)
    cache = ReportCache(tmp_path / "cache")
    runs, examples = load_study(tracking_uri, None, cache)
    assert set(runs["run_id"]) == {done, running} and fetched[-1] == {done, running} and len(examples) == 8

    # the running trial finishes, and a new one appears: only the not-done and the new runs are fetched again
    client.set_tag(running, "arb.status", "finished")
    new = _log_trial_run(client, exp, "c", "finished", [1.0, 1.0])
    runs, examples = load_study(tracking_uri, None, cache)
    assert fetched[-1] == {running, new}
    assert set(runs["run_id"]) == {done, running, new} and set(runs["status"]) == {"finished"}
    assert sorted(examples.groupby("run_id").size()) == [4, 4, 4]  # nothing counted twice

    # nothing changed: a third report reads everything from the cache
    runs_again, examples_again = load_study(tracking_uri, None, cache)
    assert fetched[-1] == set() and len(runs_again) == 3
    pd.testing.assert_frame_equal(
        examples_again.sort_values(["run_id", "condition", "example_id"]).reset_index(drop=True),
        examples.sort_values(["run_id", "condition", "example_id"]).reset_index(drop=True),
    )
