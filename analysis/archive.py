"""One file per study: `arb export` writes grids' MLflow record into a .tar.gz, `arb import` loads it into any
tracking store, where `arb report`, `arb ui`, `arb status` and `arb resume` work as on the original.

What an archive carries, per grid: the experiment's tags (the grid spec that `arb resume` reads, the scores view,
the description) and every run (trials and their evaluation runs): name, status, start and end times, tags,
params, each metric's full history, and every artifact. Written through MLflow's client API only, so any store
can be the source or the target (a cluster's PostgreSQL server, a laptop's SQLite file).

What it does not carry, because MLflow's client cannot re-create it: traces (each run's examples table has every
example), logged models and registered prompt versions (the optimized program is also a run artifact), and run
ids, which the target store assigns: tags that name another run of the archive (an evaluation run's
`arb.trial_run`) are rewritten to the new ids."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from trainables.errors import ArbError, unknown_name
from trainables.record import tracking

FORMAT = 1
ROOT = "arb-export"


@dataclass
class Moved:
    grid: str
    runs: int
    artifacts: int  # files


def export_grids(tracking_uri: str, names: list[str], out: Path, report: Path | None = None) -> list[Moved]:
    """Write `names` (grids = MLflow experiments) of the store at `tracking_uri` into the archive `out`; `report`,
    a directory of `arb report` tables, goes in too."""
    client = MlflowClient(tracking_uri)
    moved = []
    with tempfile.TemporaryDirectory(prefix="arb-export-") as tmp:
        root = Path(tmp) / ROOT
        for name in names:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                known = [e.name for e in client.search_experiments() if e.name != "Default"]
                raise unknown_name("grid", name, known)
            folder = root / "grids" / name
            folder.mkdir(parents=True)
            (folder / "experiment.json").write_text(json.dumps({"id": exp.experiment_id, "tags": exp.tags}))
            files = 0
            runs = tracking.search_all(client, exp.experiment_id)
            for run in runs:
                rdir = folder / "runs" / run.info.run_id
                rdir.mkdir(parents=True)
                history = {}
                for key in run.data.metrics:
                    points = client.get_metric_history(run.info.run_id, key)
                    history[key] = [[m.value, m.timestamp, m.step] for m in points]
                record = {"name": run.info.run_name, "status": run.info.status, "start_time": run.info.start_time,
                          "end_time": run.info.end_time, "tags": run.data.tags, "params": run.data.params,
                          "metrics": history}  # fmt: skip
                (rdir / "run.json").write_text(json.dumps(record))
                if client.list_artifacts(run.info.run_id):
                    client.download_artifacts(run.info.run_id, "", str(rdir / "artifacts"))
                    files += sum(1 for p in (rdir / "artifacts").rglob("*") if p.is_file())
            moved.append(Moved(name, len(runs), files))
        if report is not None:
            shutil.copytree(report, root / "report")
        manifest = {"format": FORMAT, "grids": names, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source": tracking.redact(tracking_uri)}  # fmt: skip
        (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname=ROOT)
    return moved


def import_archive(archive: Path, tracking_uri: str) -> list[Moved]:
    """Load every grid of `archive` into the store at `tracking_uri`; a grid that already has runs there is
    refused rather than merged (two runs per trial key would follow)."""
    client = MlflowClient(tracking_uri)
    moved = []
    with tempfile.TemporaryDirectory(prefix="arb-import-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, links or devices from the archive
        except (OSError, tarfile.TarError) as exc:
            raise ArbError(f"cannot read archive {archive}: {exc}", "give a file written by `arb export`") from None
        root = Path(tmp) / ROOT
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except (OSError, ValueError):
            raise ArbError(f"{archive} is not an arb export (no {ROOT}/manifest.json)", "use `arb export`") from None
        if manifest.get("format") != FORMAT:
            raise ArbError(f"{archive} has export format {manifest.get('format')}, this arb reads {FORMAT}",
                           "import it with the arb version that exported it")  # fmt: skip
        for name in manifest["grids"]:
            moved.append(_import_grid(client, tracking_uri, name, root / "grids" / name))
    return moved


def _import_grid(client: MlflowClient, tracking_uri: str, name: str, folder: Path) -> Moved:
    existing = client.get_experiment_by_name(name)
    if existing is not None and tracking.search_all(client, existing.experiment_id):
        raise ArbError(f"grid {name!r} already has runs in {tracking.redact(tracking_uri)}",
                       "import into another store (--tracking-uri), or delete that experiment first")  # fmt: skip
    exp = json.loads((folder / "experiment.json").read_text())
    experiment_id = tracking.ensure_experiment(tracking_uri, name)
    for key, value in exp["tags"].items():
        # the description's links name the experiment by id
        value = value.replace(f"experiments/{exp['id']}", f"experiments/{experiment_id}")
        client.set_experiment_tag(experiment_id, key, value)
    records = {p.name: json.loads((p / "run.json").read_text()) for p in sorted((folder / "runs").glob("*"))}
    new_ids = {}
    for old_id, record in records.items():
        run = client.create_run(experiment_id, start_time=record["start_time"], run_name=record["name"])
        new_ids[old_id] = run.info.run_id
    files = 0
    for old_id, record in records.items():
        run_id = new_ids[old_id]
        tags = [RunTag(k, new_ids.get(v, v)) for k, v in record["tags"].items() if k != "mlflow.runName"]
        params = [Param(k, v) for k, v in record["params"].items()]
        metrics = [Metric(k, value, timestamp, step) for k, points in record["metrics"].items()
                   for value, timestamp, step in points]  # fmt: skip
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)  # MLflow splits it into its limits
        artifacts = folder / "runs" / old_id / "artifacts"
        if artifacts.is_dir():
            client.log_artifacts(run_id, str(artifacts))
            files += sum(1 for p in artifacts.rglob("*") if p.is_file())
        if record["status"] != "RUNNING":  # a run that was cut stays open, as `arb resume` expects to find it
            client.set_terminated(run_id, status=record["status"], end_time=record["end_time"])
    return Moved(name, len(records), files)
