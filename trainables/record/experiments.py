"""A grid's MLflow experiment as the record keeps it: the spec it was launched with (what `arb resume NAME`
reads back), its description in the UI, and the saved runs-table view with the scores as columns."""

from __future__ import annotations

import json
from typing import Any

from mlflow.tracking import MlflowClient

from trainables.errors import ArbError
from trainables.record.schema import Tag
from trainables.record.tracking import ensure_experiment, store_error

"""The registry entries of the grid's models as it ran them (JSON, name → entry): later readers (`arb status`,
`report`, `route`) know a model that only the user's registry file named, without that file."""
SCORES_VIEW = "arb-scores"
"""A saved view of the experiment's runs table with the scores as columns (MLflow's shared view state: the UI
shows no metric column by default). `arb ui` prints the link to it."""
SCORES_VIEW_STATE = {
    "selectedColumns": [
        *(f"metrics.`{m}`" for m in ("baseline_score", "optimized_score", "delta_pp", "lm_calls", "cost_usd")),
        *(f"params.`{p}`" for p in ("model", "task", "optimizer", "demos", "n_labeled")),
        "tags.`arb.outcome`",
    ]
}


def remember(
    tracking_uri: str, experiment_id: str, spec_json: str, registry_path: str | None, note: str, models_json: str = ""
) -> None:  # fmt: skip
    """Store a grid's spec (JSON), its registry path and its models' entries (`Tag.MODELS`), its description and
    the scores view on its experiment."""
    client = MlflowClient(tracking_uri)
    client.set_experiment_tag(experiment_id, Tag.GRID_SPEC, spec_json)
    client.set_experiment_tag(experiment_id, Tag.REGISTRY_PATH, registry_path or "")
    if models_json:
        client.set_experiment_tag(experiment_id, Tag.MODELS, models_json)
    client.set_experiment_tag(experiment_id, "mlflow.note.content", note)
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{SCORES_VIEW}", json.dumps(SCORES_VIEW_STATE))


def stored(tracking_uri: str, name: str) -> tuple[str, str | None]:
    """The spec (JSON) and registry path a grid was last launched with, read back from its experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None or Tag.GRID_SPEC not in exp.tags:
        ensure_experiment(tracking_uri, "Default")  # a store that cannot be reached fails here, with its own message
        raise ArbError(
            f"no grid named {name!r} has been run in {tracking_uri}",
            "check `arb status`, or `arb run GRIDFILE`",
        )
    return exp.tags[Tag.GRID_SPEC], exp.tags.get(Tag.REGISTRY_PATH) or None


def stored_models(tracking_uri: str, name: str) -> list[str]:
    """The models' registry entries grid `name` recorded as it ran (`Tag.MODELS`; none for grids run before)."""
    exp = MlflowClient(tracking_uri).get_experiment_by_name(name)
    return [exp.tags[Tag.MODELS]] if exp is not None and Tag.MODELS in exp.tags else []


def ensure_scores_view(client: Any, experiment: Any) -> None:
    """Give a grid's experiment the scores view if it was launched before the view existed."""
    if f"mlflow.sharedViewState.{SCORES_VIEW}" not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id, f"mlflow.sharedViewState.{SCORES_VIEW}", json.dumps(SCORES_VIEW_STATE)
        )


def scores_view_url(ui: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow UI at `ui`, with the scores as columns."""
    return f"{ui.rstrip('/')}/{scores_view_link(experiment_id)}"


def scores_view_link(experiment_id: str) -> str:
    """`scores_view_url` relative to the page it is on (a link in a description)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={SCORES_VIEW}"


def describe(experiment_id: str, name: str, words: str, size_line: str, axes: list[str]) -> str:
    """The experiment's description in the MLflow UI: a link to the scores view first (the UI shows the first line
    on top of every page of the experiment, and MLflow 3.17 opens an experiment on the Overview or the Runs page by
    the workflow chosen in the UI, never on a saved view), then the grid's own words, its axes, and how to act."""
    scores = (
        f"**[Scores of every trial]({scores_view_link(experiment_id)})**: the runs table with the scores as columns."
    )
    lines = [scores, "", words, "", size_line, *(f"- {axis}" for axis in axes)]
    lines += [
        "",
        "Each run is one trial: `baseline_score`, `optimized_score` and `delta_pp` are its result; its description, "
        "Traces tab, `examples.json` table and child runs (the optimizer's candidates) tell the rest. Each condition "
        "of a trial (baseline, optimized) is also an evaluation run (Evaluation runs page), which holds its traces "
        "with the gold answers and scores as assessments; select two and *Compare* to see them example by example.",
        f"`arb resume {name}` finishes unfinished trials; `arb report {name}` writes the study's tables.",
    ]
    return "\n".join(lines)


def score_view_lines(uri: str, ui: str) -> list[str]:
    """One line per grid in the store: the link to its runs table with the scores as columns."""
    client = MlflowClient(uri)
    try:
        grids = [e for e in client.search_experiments() if Tag.GRID_SPEC in e.tags]
        for exp in grids:
            ensure_scores_view(client, exp)
    except Exception as exc:
        raise store_error(uri, exc) from None
    if not grids:
        return []
    width = max(len(e.name) for e in grids)
    links = [f"  {e.name:<{width}}  {scores_view_url(ui, e.experiment_id)}" for e in grids]
    return [
        "scores of each grid:", *links,
        "(MLflow 3.17 opens every experiment on the page of the workflow chosen at its top left, GenAI: Overview, "
        "Model training: Runs; no saved view can be an experiment's first page. These links, and the first line of "
        "each grid's description, open the scores.)",
    ]  # fmt: skip
