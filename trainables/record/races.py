"""A race's MLflow record (`arb route`): one run per task's race in the grid's experiment, tagged `race` (it has
no trial key, so status, resume and the report's trial counts do not see it). Every look's intervals are metric
history (step = round); every program's per-example outcomes are `race/outcomes.json`, rewritten after each round,
so a killed race resumes from the last round recorded without scoring an example twice; the decision is tags, a
table and the run's description."""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric as MetricPoint
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.record.schema import Tag
from trainables.record.tracking import search_all
from trainables.stats.race import Standing

KIND = "race"
OUTCOMES = "race/outcomes.json"
OUTCOMES_TABLE = "race/outcomes_table.json"

Outcomes = dict[str, dict[str, float]]
"""Program name → example id → score."""


@dataclass
class RaceRecord:
    """The run of one task's race: found by its key, or started."""

    client: MlflowClient
    run_id: str
    rounds: int = 0
    recorded: Outcomes = field(default_factory=dict)
    """The outcomes the run held when opened (a resumed race's earlier rounds)."""

    @classmethod
    def open(
        cls, client: MlflowClient, experiment_id: str, key: str, *, task: str, grid: str, run_name: str,
        params: dict[str, Any],
    ) -> RaceRecord:  # fmt: skip
        """The race run with `key` (same programs and rule) and the rounds and outcomes it recorded, or a new one."""
        found = search_all(client, experiment_id, f"tags.`{Tag.RACE_KEY}` = '{key}'")
        if found:
            run = found[0]
            record = cls(client, run.info.run_id, int(run.data.tags.get(Tag.RACE_ROUNDS, "0")))
            record.recorded = record._recorded()
            return record
        tags = {Tag.KIND: KIND, Tag.RACE_KEY: key, Tag.TASK: task, Tag.GRID: grid, Tag.RACE_ROUNDS: "0"}
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        for k, v in params.items():
            client.log_param(run.info.run_id, k, str(v)[:6000])
        return cls(client, run.info.run_id)

    def _recorded(self) -> Outcomes:
        with tempfile.TemporaryDirectory(prefix="arb-race-") as tmp:
            try:
                path = self.client.download_artifacts(self.run_id, OUTCOMES, dst_path=tmp)
            except MlflowException:  # no round recorded yet
                return {}
            recorded = json.loads(Path(path).read_text())
        return {name: {str(k): float(v) for k, v in scores.items()} for name, scores in recorded.items()}

    def log_look(self, standings: Iterable[Standing], racing: int) -> None:
        """Each candidate's gap and interval at this round, as metric history (the UI charts them narrowing)."""
        now = int(time.time() * 1000)
        metrics = []
        for s in standings:
            key = _slug(s.name)
            for what, value in (("gap_pp", s.delta_pp), ("ci_low", s.ci_low), ("ci_high", s.ci_high), ("n", s.n)):
                if not math.isnan(value):
                    metrics.append(MetricPoint(f"{what}.{key}", float(value), now, self.rounds))
        metrics.append(MetricPoint("racing", float(racing), now, self.rounds))
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def save_round(self, outcomes: Outcomes, played: bool) -> None:
        """The outcomes so far (also after a failed round: its finished pieces are not scored again); `played`:
        the round finished, so it counts."""
        if played:
            self.rounds += 1
        self.client.log_dict(self.run_id, outcomes, OUTCOMES)
        self.client.set_tag(self.run_id, Tag.RACE_ROUNDS, str(self.rounds))

    def finish(self, outcomes: Outcomes, models: dict[str, str], decision: str, route_to: str, note: str) -> None:
        """The decision: the outcomes as a table (`models`: program → model, in the table's order), the tags, the
        description."""
        rows = [{"program": program, "model": model, "example_id": example_id, "score": score}
                for program, model in models.items()
                for example_id, score in outcomes.get(program, {}).items()]  # fmt: skip
        self.client.log_table(self.run_id, data=pd.DataFrame(rows), artifact_file=OUTCOMES_TABLE)
        self.client.set_tag(self.run_id, Tag.RACE_DECISION, decision)
        self.client.set_tag(self.run_id, Tag.ROUTE_TO, route_to)
        self.client.set_tag(self.run_id, "mlflow.note.content", note)
        self.client.set_terminated(self.run_id, status="FINISHED")


def _slug(name: str) -> str:
    """A program name as an MLflow metric key (letters, digits, _ - . / and spaces only)."""
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", name)
