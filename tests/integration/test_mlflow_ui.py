"""The MLflow UI on a finished stub grid, in headless Chromium: the runs table shows the scores (the view `arb ui`
links to); a trial's run has its description and registered prompt, its Traces tab the score of each example in
the assessment column (the task's metric, its average and distribution) and the gold answers, its per-example table
the inputs, gold, prediction and score, and its two conditions compare example by example on MLflow's Evaluation
runs page. Screenshots are saved (the README's come from `scripts/ui_screenshots.py` on a smoke run, the same
code)."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
from stub_server import StubServer

from grid.launch import run_grid
from grid.spec import load_grid
from trainables.registry import load_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from ui_screenshots import capture

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver",
)


def test_mlflow_ui_shows_scores_assessments_table_and_comparison(stub: StubServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  llama3.2: {{provider: ollama, id: llama3.2, endpoint: '{stub.url}'}}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: ui\ndescription: One stub model on math.\nmodels: [llama3.2]\ntasks: [math]\noptimizer: mipro\n"
        "demos: [2]\nn_labeled: [6]\nn_val: 3\nn_eval: 8\ndata: sample\n"
        "optimizer_params: {num_candidates: 2, num_trials: 2, minibatch: false}\n"
    )
    uri = f"sqlite:///{home / 'mlflow.db'}"
    outcome = run_grid(load_grid(grid), load_registry(registry), uri, home, stream=io.StringIO())
    assert outcome.failed == []

    # each page is checked for what it must show before its picture is taken (AssertionError names what is missing)
    shots = capture(uri, "ui", tmp_path / "shots")
    assert set(shots) == {"runs", "run", "traces", "examples", "compare"}
    for path in shots.values():
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
