"""A baseline evaluated once and shared by every optimizer's trial of the same point.

With several optimizers in a grid, each point (model, task, seed, test examples, output format) has one trial per
optimizer, and each would evaluate the same unoptimized program on the same test examples: the same work, paid
once per optimizer. The first trial to need it evaluates it and keeps the result in the grid's MLflow experiment,
as a run of its own (tag `arb.kind = baseline`, key `arb.baseline_key`, the per-example records as `baseline.json`);
the others, on any node, read it from there. Each trial's record still carries the baseline's per-example results
(its examples table, its metrics), and says where they came from (tag `arb.baseline_run`, metric
`baseline_shared`).

Two trials of one point that start at the same moment may both evaluate (there is no lock in MLflow); both results
are kept, and later trials read the oldest. Baseline runs have no `arb.trial_key`, so nothing that counts or
reports trials sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields

from mlflow.tracking import MlflowClient

from trainables.record.schema import Metric, Tag
from trainables.record.scores import EvalResult, ExampleRecord
from trainables.vocabulary import Trial, trial_key

ARTIFACT = "baseline.json"


def baseline_key(trial: Trial) -> str:
    """What decides a baseline's result: the model, the task and its version, the test examples (seed, n_eval and
    the data source), the output format and the scoring; not the optimizer, its teacher, demos or n_labeled."""
    return trial_key(
        kind="baseline", model=trial.model, task=trial.task, task_version=trial.task_version, seed=trial.seed,
        n_eval=trial.n_eval, data=trial.data, structured=trial.structured,
        **({"scoring": trial.scoring} if trial.scoring != "headline" else {}),
    )  # fmt: skip


def shared(
    client: MlflowClient, experiment_id: str, trial: Trial, evaluate: Callable[[], EvalResult]
) -> tuple[EvalResult, str | None]:
    """The trial's baseline: (a result kept by an earlier trial, its run id), or (`evaluate()`, None) after keeping
    it for the trials that come later."""
    key = baseline_key(trial)
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{Tag.BASELINE_KEY}` = '{key}' and tags.`{Tag.BASELINE_DONE}` = 'true'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        kept = _read(client.download_artifacts(run_id, ARTIFACT))
        if kept is not None:
            return kept, run_id
    result = evaluate()
    _keep(client, experiment_id, trial, key, result)
    return result, None


def _keep(client: MlflowClient, experiment_id: str, trial: Trial, key: str, result: EvalResult) -> None:
    run = client.create_run(
        experiment_id,
        run_name=f"baseline · {trial.model} · {trial.task} · s{trial.seed} · n{trial.n_eval}",
        tags={Tag.KIND: "baseline", Tag.BASELINE_KEY: key, Tag.GRID: trial.grid, Tag.PHASE: trial.phase},
    )
    run_id = run.info.run_id
    client.log_metric(run_id, Metric.BASELINE_SCORE, result.score)
    client.log_text(run_id, json.dumps(_state(result)), ARTIFACT)
    # written last: a trial that reads the tag finds the artifact complete
    client.set_tag(run_id, Tag.BASELINE_DONE, "true")
    client.set_terminated(run_id)


def _state(result: EvalResult) -> dict[str, object]:
    return {
        "corpus_score": result.corpus_score,
        "strict_corpus_score": result.strict_corpus_score,
        "mean_in_flight": result.mean_in_flight,
        "records": [asdict(r) for r in result.records],
    }


def _read(path: str) -> EvalResult | None:
    """The kept baseline, or None for one kept before records had a strict score (evaluated again, rather than
    leaving the trial's strict scores unknown)."""
    with open(path) as f:
        state = json.load(f)
    if any(r.get("strict_score") is None for r in state["records"]):
        return None
    known = {f.name for f in fields(ExampleRecord)}
    records = [ExampleRecord(**{k: v for k, v in r.items() if k in known}) for r in state["records"]]
    return EvalResult(
        condition="baseline", records=records, corpus_score=state["corpus_score"],
        mean_in_flight=float(state["mean_in_flight"]), strict_corpus_score=state.get("strict_corpus_score"),
    )  # fmt: skip
