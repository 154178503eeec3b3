"""`arb export` / `arb import`: a grid run on one store, moved in one archive to another, reads the same there:
the same trials with their tags, params, metric histories and artifacts, the same report tables, evaluation runs
pointing at their trial's new id, and `arb resume` on the new store finds nothing left to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient
from stub_server import StubServer

from trainables.record.schema import Tag

ROOT = Path(__file__).resolve().parents[2]


def _arb(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], cwd=ROOT, env={**env, "ARB_HOME": str(home)},
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _by_key(uri: str) -> dict[str, object]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("moved")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {r.data.tags[Tag.KEY]: r for r in runs if Tag.KEY in r.data.tags}


def test_export_then_import_elsewhere_reads_the_same(tmp_path: Path, known_answers: dict[str, str]) -> None:
    from stub_server import table_responder

    with StubServer(["llama3.2", "mistral"], table_responder(known_answers)) as stub:
        registry = tmp_path / "models.yaml"
        entries = [f"  {m}: {{provider: ollama, id: {m}, endpoint: '{stub.url}'}}\n" for m in ("llama3.2", "mistral")]
        registry.write_text("models:\n" + "".join(entries))
        grid = tmp_path / "grid.yaml"
        grid.write_text("name: moved\nmodels: [llama3.2, mistral]\ntasks: [math]\noptimizer: none\nn_eval: 4\n"
                        "data: sample\n")  # fmt: skip
        cluster, laptop = tmp_path / "cluster", tmp_path / "laptop"
        ran = _arb("run", str(grid), "--models", str(registry), home=cluster)
        assert ran.returncode == 0, ran.stderr
        calls = stub.state.calls.total()

        archive = tmp_path / "moved.arb.tar.gz"
        out = _arb("export", "moved", "--out", str(archive), home=cluster)
        assert out.returncode == 0, out.stderr
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert "arb-export/manifest.json" in names and any(n.startswith("arb-export/report/") for n in names)

        loaded = _arb("import", str(archive), home=laptop)
        assert loaded.returncode == 0, loaded.stderr
        old_uri = f"sqlite:///{cluster / 'mlflow.db'}"
        new_uri = f"sqlite:///{laptop / 'mlflow.db'}"
        old, new = _by_key(old_uri), _by_key(new_uri)
        assert set(old) == set(new) and len(new) == 2
        client_old, client_new = MlflowClient(old_uri), MlflowClient(new_uri)
        for key, run in old.items():
            moved = new[key]
            assert moved.info.run_id != run.info.run_id and moved.info.status == run.info.status
            assert moved.data.params == run.data.params and moved.data.metrics == run.data.metrics
            assert {k: v for k, v in moved.data.tags.items() if k != "mlflow.runName"} == {
                k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}  # fmt: skip
            path = client_new.download_artifacts(moved.info.run_id, "examples.json", str(tmp_path / "dl" / key))
            original = client_old.download_artifacts(run.info.run_id, "examples.json", str(tmp_path / "o" / key))
            assert json.loads(Path(path).read_text()) == json.loads(Path(original).read_text())
        # evaluation runs point at their trial's new id
        exp = client_new.get_experiment_by_name("moved")
        evaluations = client_new.search_runs([exp.experiment_id], filter_string="tags.`arb.kind` = 'evaluation'")
        assert evaluations and {r.data.tags["arb.trial_run"] for r in evaluations} <= {
            r.info.run_id for r in new.values()}  # fmt: skip

        # the same tables from the new store; resume there has nothing to run
        a = _arb("report", "moved", "--out", str(tmp_path / "report-a"), home=cluster)
        b = _arb("report", "moved", "--out", str(tmp_path / "report-b"), home=laptop)
        assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
        tables = sorted((tmp_path / "report-a").glob("*.csv"))
        assert tables
        for table in tables:  # equal but for the ids the new store gave
            if not table.read_text().strip():  # a table with nothing to show here
                assert not (tmp_path / "report-b" / table.name).read_text().strip()
                continue
            ids = ["run_id", "experiment_id"]
            before = pd.read_csv(table).drop(columns=ids, errors="ignore")
            after = pd.read_csv(tmp_path / "report-b" / table.name).drop(columns=ids, errors="ignore")
            pd.testing.assert_frame_equal(before, after, obj=table.name)
        again = _arb("resume", "moved", "--models", str(registry), home=laptop)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout.splitlines()[0])["reused"] == 2
        assert stub.state.calls.total() == calls

        # importing twice would give two runs per trial key: refused, one line
        twice = _arb("import", str(archive), home=laptop)
        assert twice.returncode == 2 and "already has runs" in twice.stderr
        bad = tmp_path / "not-an-archive.tar.gz"
        bad.write_text("x")
        assert "cannot read archive" in _arb("import", str(bad), home=laptop).stderr
