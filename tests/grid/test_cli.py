"""`arb` from a user's shell: bad input is one line on stderr, a non-zero exit, and no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import assert_one_line_error, assert_preflight_error


def arb(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ARB_HOME": str(home), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = arb("--help", home=tmp_path).stdout
    for command in ("run", "resume", "status", "plan", "report", "ui"):
        assert command in out


def test_plan_smoke_prints_the_trials(tmp_path: Path) -> None:
    proc = arb("plan", "smoke", home=tmp_path)
    assert proc.returncode == 0 and "1 trials" in proc.stdout and "qwen-coder-1.5b" in proc.stdout
    assert "11 trials in 5 grids" in proc.stdout and "json schema" in proc.stdout


def test_plan_prints_what_each_task_can_detect_without_creating_a_store(tmp_path: Path) -> None:
    proc = arb("plan", "phase1-sequential", home=tmp_path)
    assert proc.returncode == 0 and "54 trials" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("│ math ")]
    assert len(lines) == 2 and "assumed" in lines[0] and "assumed" in lines[1]
    assert [cell.strip() for cell in lines[0].split("│")[4:6]] == ["20 pp", "23 pp"]  # fixed, sequential at n = 50
    # a routing decision at δ = 5 pp over phase 1's 4 local candidates: the exact power of the report's Tango
    # interval (the normal formula (z_{1−0.05/8} + z_power)² × 0.25 / 0.05² says 624 and 1,116)
    assert "δ = 5 pp, 95% (Bonferroni over 4)" in proc.stdout
    assert [cell.strip() for cell in lines[1].split("│")[4:8]] == ["674", "1,166", "too few", "1,319"]
    code = [line for line in proc.stdout.splitlines() if line.startswith("│ code ")]
    assert "164: too small to decide" in code[-1]
    assert not (tmp_path / "mlflow.db").exists()


def test_missing_grid_file(tmp_path: Path) -> None:
    assert_one_line_error(arb("run", "nope.yaml", home=tmp_path), "not found", "smoke")


def test_unknown_task(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [phi4]\ntasks: [poetry]\n")
    assert_one_line_error(arb("run", str(grid), home=tmp_path), "unknown task 'poetry'", "math")


def test_unknown_model(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [gpt-17]\ntasks: [math]\n")
    assert_one_line_error(arb("plan", str(grid), home=tmp_path), "unknown model 'gpt-17'")


def test_malformed_grid_file(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [phi4\n")
    assert_one_line_error(arb("run", str(grid), home=tmp_path), "not valid YAML")


def test_missing_api_key_fails_before_any_trial(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [gpt-4o]\ntasks: [math]\ndata: sample\n")
    proc = arb("run", str(grid), home=tmp_path, env={"OPENAI_API_KEY": ""})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    problem, summary = proc.stderr.splitlines()  # the preflight's line, then its one-line verdict
    assert problem.startswith("  ✘ ") and "OPENAI_API_KEY" in problem and summary.startswith("arb: error: 1 problem")
    assert not (tmp_path / "ray").exists()


def test_missing_embedded_model_package(tmp_path: Path) -> None:
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  tiny: {provider: embedded, id: tiny, gguf: 'no_such_gguf_pkg:assemble'}\n")
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [tiny]\ntasks: [math]\ndata: sample\noptimizer: none\n")
    assert_preflight_error(
        arb("run", str(grid), "--models", str(registry), home=tmp_path), "no_such_gguf_pkg", "pip install"
    )


def test_resume_of_unknown_grid(tmp_path: Path) -> None:
    assert_one_line_error(arb("resume", "never-ran", home=tmp_path), "never-ran", "arb run")


def test_embedded_port_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        grid = tmp_path / "g.yaml"
        grid.write_text("name: g\nmodels: [smollm2]\ntasks: [math]\ndata: sample\noptimizer: none\n")
        proc = arb("run", str(grid), "--embedded-port", str(port), home=tmp_path)
    assert_preflight_error(proc, f"port {port}", "is taken")


def test_port_of_a_stopped_server_is_free_despite_time_wait() -> None:
    """The next grid of a `then:` chain restarts the embedded servers on the same ports seconds later."""
    from grid.embedded import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn (llama.cpp's server) does
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection lingers in TIME_WAIT
    client.close()
    server.close()
    assert _port_free(port)


def test_ui_links_each_grid_to_its_scores_view(tmp_path: Path) -> None:
    import json

    from mlflow.tracking import MlflowClient

    from grid.spec import GridSpec
    from trainables.record import tracking
    from trainables.record.experiments import SCORES_VIEW, SCORES_VIEW_STATE, score_view_lines

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "older-grid")  # launched before the view existed: no view tag yet
    client = MlflowClient(uri)
    client.set_experiment_tag(
        exp, "arb.grid_spec", GridSpec(name="older-grid", models=["llama3.2"], tasks=["math"]).model_dump_json()
    )
    lines = score_view_lines(uri, "http://127.0.0.1:5000")
    assert lines[1].split() == [
        "older-grid",
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs?viewStateShareKey={SCORES_VIEW}",
    ]
    tag = client.get_experiment(exp).tags[f"mlflow.sharedViewState.{SCORES_VIEW}"]
    assert json.loads(tag) == SCORES_VIEW_STATE and "metrics.`delta_pp`" in SCORES_VIEW_STATE["selectedColumns"]
    assert "no saved view can be an experiment's first page" in lines[-1]  # and says how to get there instead


def test_a_grids_description_opens_with_the_link_to_its_scores() -> None:
    """MLflow 3.17 shows an experiment's description on top of every one of its pages, first line first."""
    from grid.launch import experiment_description
    from grid.spec import GridSpec
    from trainables.record.experiments import SCORES_VIEW

    text = experiment_description(GridSpec(name="g", models=["llama3.2"], tasks=["math"]), "7")
    assert text.splitlines()[0] == (
        f"**[Scores of every trial](#/experiments/7/runs?viewStateShareKey={SCORES_VIEW})**: the runs table with "
        "the scores as columns."
    )


def test_report_on_an_unknown_grid_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(arb("report", "nosuchgrid", "--out", str(tmp_path / "r"), home=tmp_path), "nosuchgrid")


def test_check_passes_the_shipped_samples_and_names_each_problem(tmp_path: Path) -> None:
    # a port nothing listens on: a test beside this one may be serving an embedded model on the default
    ok = arb("check", "smoke", "--embedded-port", str(_free_port()), home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "grid 'smoke'" in ok.stdout and ": ok" in ok.stdout
    data = tmp_path / "data"
    (data / "lhoestq" / "conll2003").mkdir(parents=True)
    (data / "lhoestq" / "conll2003" / "conll2003.py").write_text("import datasets\n")
    grid = tmp_path / "g.yaml"
    grid.write_text(
        f"name: g\nmodels: [llama3.2]\ntasks: [extraction, math]\noptimizer: none\ndemos: [0]\nn_labeled: [0]\n"
        f"n_val: 1\ndata: {data}\n"
    )
    port = _free_port()  # nothing listens there: the Ollama check must say so too
    bad = arb("check", str(grid), home=tmp_path, env={"OLLAMA_HOST": f"127.0.0.1:{port}"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert any("extraction:" in line and "loading script" in line for line in lines)
    assert any("math:" in line and "train.jsonl does not exist" in line for line in lines)
    assert any(f"Ollama at http://127.0.0.1:{port} does not answer" in line for line in lines)
    assert lines[-1].startswith("arb: error: 3 problem(s) found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_reports_each_problem_in_one_line_exactly_as_run_would(tmp_path: Path) -> None:
    """A missing API key, a missing GGUF file and a sandbox that cannot start: `arb check` names all three, one
    line each, and `arb run` stops on the same lines before any work."""
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  gpt-4o: {provider: openai, id: gpt-4o, api_key_env: OPENAI_API_KEY}\n"
        "  tiny: {provider: embedded, id: tiny, gguf: 'json:file:nope.gguf', context: 2048}\n"
    )
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmodels: [gpt-4o, tiny]\ntasks: [code]\ndata: sample\n")
    env = {"OPENAI_API_KEY": "", "ARB_SANDBOX_PYTHON": str(tmp_path / "no-python")}
    check = arb("check", str(grid), "--models", str(models), home=tmp_path, env=env)
    run = arb("run", str(grid), "--models", str(models), home=tmp_path, env=env)
    for proc in (check, run):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in check.stderr.splitlines() if line.startswith("  ✘ ")]
    assert len(lines) == 3, check.stderr
    assert "OPENAI_API_KEY" in lines[0] and "nope.gguf is missing" in lines[1] and "sandbox cannot run" in lines[2]
    assert [line for line in run.stderr.splitlines() if line.startswith("  ✘ ")] == lines
    assert not (tmp_path / "ray").exists()
