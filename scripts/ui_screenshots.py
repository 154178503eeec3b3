"""Open the MLflow UI on a store in headless Chromium, check what a trial's run shows, and save screenshots.

    .venv/bin/python scripts/ui_screenshots.py sqlite:///arb-results/mlflow.db docs/ui --grid smoke

Serves the store with `mlflow ui` on 127.0.0.1, opens the grid's runs table with the scores as columns (the view
`arb ui` links to), one trial's run (description, registered prompt), its Traces tab (each example's gold answer
and score as assessments, the score's distribution), its `examples.json` table (inputs, gold, prediction, score),
and its optimized condition compared to its baseline example by example on MLflow's Evaluation runs page, and
saves one PNG each. `tests/integration/test_mlflow_ui.py` runs the same pages on a stub grid. Needs Debian's chromium and
chromium-driver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.record.experiments import ensure_scores_view, scores_view_url  # noqa: E402

PAGE_TIMEOUT_S = 90.0


@contextmanager
def mlflow_ui(tracking_uri: str, log: Path) -> Iterator[str]:
    """`mlflow ui` for the store on a free port of 127.0.0.1; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ},  # as `arb ui`
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow ui did not answer within 120 s")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def chromium(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=2200,1000",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)


def wait_for_text(driver: Any, *needles: str, timeout_s: float = PAGE_TIMEOUT_S) -> str:
    """The page's text once every needle is in it (the UI renders after its API calls return)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d: Any) -> str | None:
        text = str(d.execute_script("return document.body.innerText"))
        return text if all(n in text for n in needles) else None

    try:
        return str(WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(ready))
    except TimeoutException:
        text = str(driver.execute_script("return document.body.innerText"))
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"{driver.current_url}: {missing} not shown within {timeout_s} s") from None


def _close_assistant(driver: Any) -> None:
    # MLflow's assistant panel opens on the right by default and hides half the table in a picture.
    driver.execute_script(
        """for (const b of document.querySelectorAll('button')) {
             const p = b.closest('div'); if (!p) continue;
             if ((b.getAttribute('aria-label') || '').toLowerCase().includes('close') &&
                 (p.parentElement || p).innerText.includes('MLflow Assistant')) { b.click(); return; } }"""
    )


def capture(tracking_uri: str, grid: str, out: Path) -> dict[str, Path]:
    """Visit the five pages for `grid`'s first finished trial that registered a prompt, check them, and save a
    screenshot of each."""
    from mlflow.tracking import MlflowClient

    from trainables.record.schema import Tag
    from trainables.tasks import get_task

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(grid)
    if exp is None:
        raise SystemExit(f"no grid {grid!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`arb.status` = 'finished'",
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    runs = [r for r in runs if "arb.prompt_uri" in r.data.tags]
    if not runs:
        raise SystemExit(f"grid {grid!r} has no finished run with an optimized prompt")
    run = runs[0]
    ensure_scores_view(client, exp)
    conditions = {
        r.data.tags["arb.condition"]: r
        for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`{Tag.TRIAL_RUN}` = '{run.info.run_id}'")
    }
    if set(conditions) != {"baseline", "optimized"}:
        raise SystemExit(f"run {run.info.run_id} of grid {grid!r} has no evaluation runs (was it run with "
                         "`traces: none`, or before they existed?)")  # fmt: skip
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    traces = len(mlflow.search_traces(locations=[exp.experiment_id], run_id=run.info.run_id, return_type="list"))
    metric = get_task(run.data.params["task"]).metric_name
    pair = _one_example_in_both(exp.experiment_id, conditions["baseline"].info.run_id,
                                conditions["optimized"].info.run_id)  # fmt: skip
    prompt = run.data.tags["arb.prompt_uri"].removeprefix("prompts:/").rsplit("/", 1)
    out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, Path] = {}
    log = Path(tempfile.gettempdir()) / f"arb-mlflow-ui-{os.getpid()}.log"
    with mlflow_ui(tracking_uri, log) as ui:
        driver = chromium(out / ".chromium-profile")
        try:
            base = f"{ui}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
            optimized, baseline = (conditions[c] for c in ("optimized", "baseline"))
            compare = (f"{ui}/#/experiments/{exp.experiment_id}/evaluation-runs?selectedRunUuid="
                       f"{optimized.info.run_id}&compareToRunUuid={baseline.info.run_id}")  # fmt: skip
            pages = {
                "runs": (scores_view_url(ui, exp.experiment_id),
                         ["baseline_score", "optimized_score", "delta_pp", run.info.run_name or ""]),
                # the prompt version under "Registered prompts", not "—"
                "run": (base, ["Description", "paired 95% interval", "baseline_score", f"{prompt[0]} (v{prompt[1]})"]),
                # the assessment column: the metric's name over its average and distribution; the gold answers
                "traces": (f"{base}/traces", ["Trace ID", f"{traces} of {traces}", "Assessments", metric, "AVG",
                                              "Expectations"]),
                "examples": (f"{base}/artifacts/examples.json", ["example_id", "condition", "inputs", "gold",
                                                                  "prediction", "score"]),
                # one example's two conditions side by side, paired by request
                "compare": (compare, ["Comparing", optimized.info.run_name or "", baseline.info.run_name or "",
                                      metric, *pair]),
            }  # fmt: skip
            for name, (url, needles) in pages.items():
                driver.get(url)
                text = wait_for_text(driver, *needles)
                if name == "compare" and text.count(pair[0]) != 1:  # one row for the example's two traces
                    raise AssertionError(f"{url}: {pair[0]!r} is shown {text.count(pair[0])} times, not paired once")
                _close_assistant(driver)
                time.sleep(1.0)  # let charts and icons settle before the picture
                shots[name] = out / f"{name}.png"
                driver.save_screenshot(str(shots[name]))
        finally:
            driver.quit()
    shutil.rmtree(out / ".chromium-profile", ignore_errors=True)
    return shots


def _one_example_in_both(experiment_id: str, baseline_run: str, optimized_run: str) -> tuple[str, str, str]:
    """(request, baseline trace id, optimized trace id) of an example traced in both conditions."""
    import mlflow

    def by_request(run_id: str) -> dict[str, str]:
        found = mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list")
        return {t.info.request_preview: t.info.trace_id for t in found}

    before, after = by_request(baseline_run), by_request(optimized_run)
    request = min(set(before) & set(after))
    # the page shows the request's first field value, as JSON text
    shown = next(iter(json.loads(request).values()), request) if request.startswith("{") else request
    return str(shown)[:60], before[request], after[request]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("tracking_uri")
    parser.add_argument("out", type=Path)
    parser.add_argument("--grid", default="smoke")
    args = parser.parse_args()
    for name, path in capture(args.tracking_uri, args.grid, args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
