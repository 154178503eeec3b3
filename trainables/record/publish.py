"""A finished trial, laid out for the MLflow UI: its datasets, its predictions as a table, its program as a model and
its instruction as a prompt version, and a description that tells its result in a few lines.

Everything here runs while the trial's run is MLflow's active run (`trainables.record.tracing.recording`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import dspy
import mlflow
import mlflow.data
import mlflow.data.pandas_dataset
import mlflow.dspy
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from trainables.record import fields, schema, tracking

T = TypeVar("T")

_TABLES = threading.Lock()
"""`MlflowClient.log_table` lists its file in the run's `mlflow.loggedArtifacts` tag by reading the run and
setting the tag again (mlflow 3.17, tracking/client.py): two tables of one run logged at once (the trial's background
writes) lose one from the list, or fail on SQL's unique (key, run) constraint. One at a time per process: a run's
writes all come from its trial's process."""

MODEL_NAME = "program"
"""Name of the logged model (the optimized program); load it with `mlflow.dspy.load_model(<tag arb.model_uri>)`."""


def log_datasets(splits: Any, task: str, data: str) -> None:
    """Train / val / test as the run's dataset inputs (name, digest, size, schema) with their roles as context,
    in one write."""
    source = data if data in ("hub", "sample") else Path(data).name  # a data directory: its name
    datasets: list[Any] = []
    contexts: list[str | None] = []
    for context, examples in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        frame = pd.DataFrame([ex.toDict() for ex in examples]).map(_cell)
        datasets.append(mlflow.data.pandas_dataset.from_pandas(frame, name=f"{task}-{source}-{context}"))
        contexts.append(context)
    tags: list[dict[str, str] | None] = [None] * len(datasets)
    _racing(partial(mlflow.log_inputs, datasets=datasets, contexts=contexts, tags_list=tags))


def _racing(write: Callable[[], T], attempts: int = 3) -> T:
    """`write`, again if it lost a race to create the same entity: trials of one grid share datasets (same task,
    seed and size) and prompts (same task and model), and MLflow creates those with check-then-insert, so two
    trials at once can both insert; the loser's retry finds the entity and links to it. A lost insert surfaces
    as the database's constraint error (datasets), or as RESOURCE_ALREADY_EXISTS: MLflow 3.x's
    `MlflowClient.register_prompt` looks the prompt up, creates it when the lookup failed, and its store raises
    "Prompt (name=…) already exists." for the second creator (`mlflow.prompt.registry_utils`)."""
    for attempt in range(attempts):
        try:
            return write()
        except MlflowException as exc:
            text = str(exc)
            lost = "UNIQUE constraint" in text or "duplicate key" in text or exc.error_code == "RESOURCE_ALREADY_EXISTS"
            if attempt == attempts - 1 or not lost:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _cell(value: Any) -> Any:
    # MLflow infers a schema from the frame; nested values (entity lists, passages) are shown as text.
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


REVIEW_COLUMNS = ("example_id", "condition", "inputs", "gold", "prediction", "score", "strict_score", "error")
"""What a reviewer reads first, in this order; the costs (latency, tokens, calls) follow."""


def log_examples_table(
    run_id: str, rows: list[dict[str, Any]], examples: list[dspy.Example], expected: tuple[str, ...]
) -> None:
    """Per-example predictions as an MLflow table, beside each example's inputs and gold answer (as JSON): the UI
    shows it and compares it across runs."""
    about = {
        str(ex.get("id", "")): {
            "inputs": fields.text(fields.inputs(ex)),
            "gold": fields.text(fields.gold(ex, expected)),
        }
        for ex in examples
    }
    frame = pd.DataFrame([{**row, **about.get(row["example_id"], {})} for row in rows])
    if "prediction" in frame:
        frame["prediction"] = frame["prediction"].map(lambda t: tracking.redact(str(t)))
    if "latency_ms" in frame:
        frame["latency_ms"] = frame["latency_ms"].round(1)  # the table is read, not computed on (examples.csv is)
    first = [c for c in REVIEW_COLUMNS if c in frame]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    _log_table(mlflow.MlflowClient(), run_id, frame, "examples.json")


def _log_table(client: mlflow.MlflowClient, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    with _TABLES:
        client.log_table(run_id, data=frame, artifact_file=artifact_file)


def log_candidates(run_id: str, rows: list[dict[str, Any]]) -> None:
    """GEPA's or SIMBA's candidates in the run: a table (`candidates.json`: score, demos, instruction, and GEPA's
    lineage) and the metric `candidate_val_score` (GEPA, validation set) or `candidate_train_score` (SIMBA,
    trainset) with one step per candidate, so the UI charts the search."""
    client = mlflow.MlflowClient()
    _log_table(client, run_id, pd.DataFrame(rows), "candidates.json")
    now = int(time.time() * 1000)
    key = "val_score" if "val_score" in rows[0] else "train_score"
    scores = [Metric(f"candidate_{key}", row[key], now, row["candidate"]) for row in rows]
    client.log_batch(run_id, metrics=scores, synchronous=True)


def log_program(program: dspy.Module, lm: dspy.LM) -> str:
    """The program as an MLflow model (DSPy flavor) and returns its URI.

    mlflow.dspy pickles DSPy's settings with the program, the LM included: it is given a copy of `lm` without the
    API key, so the key never reaches the store; LiteLLM reads it from the environment when the loaded program
    calls an API model."""
    args = getattr(lm, "plain_args", None)
    if args is None:
        args = {k: v for k, v in lm.kwargs.items() if k != "api_key"}
    keyless = dspy.LM(lm.model, **{**args, "cache": False})
    requirements = [f"dspy=={version('dspy')}", f"mlflow=={version('mlflow')}", f"litellm=={version('litellm')}"]
    with dspy.context(lm=keyless):
        info = mlflow.dspy.log_model(program, name=MODEL_NAME, pip_requirements=requirements)
    return str(info.model_uri)


def prompt_name(task: str, model: str) -> str:
    """The Prompt Registry name for a task's instruction on a model (registry names allow [A-Za-z0-9_.-])."""
    return schema.registered_name(task, model)


def register_instruction(
    task: str, model: str, instruction: str, *, run_id: str, message: str, tags: dict[str, str]
) -> str:
    """The optimized instruction as a new version of the task × model prompt, linked to run `run_id` (its page
    lists it under "Registered prompts"); returns `prompts:/name/version`."""
    prompt = _racing(
        lambda: mlflow.genai.register_prompt(
            name=prompt_name(task, model), template=instruction, commit_message=message, tags=tags
        )
    )
    uri = f"prompts:/{prompt.name}/{prompt.version}"
    mlflow.MlflowClient().link_prompt_version_to_run(run_id, uri)
    return uri


class _Shown:
    """A trial's metrics by attribute for its description: a metric the trial did not write reads 0 (NaN for the
    strict scores, which runs made before them lack)."""

    def __init__(self, metrics: dict[str, float]) -> None:
        self._metrics = metrics

    def __getattr__(self, name: str) -> float:
        key = getattr(schema.Metric, name.upper())
        return self._metrics.get(key, float("nan") if key.endswith("_strict") else 0.0)


def description(
    trial: Any, status: str, metrics: dict[str, float], delta: Any, compile_error: str, decision: Any = None,
    evaluations: tuple[str, dict[str, str]] | None = None,
) -> str:  # fmt: skip
    """The run's description (markdown, shown on its page): what ran, the result with its paired interval (and the
    test it comes from), how a sequential trial stopped, the cost, and where to review it example by example
    (`evaluations`: the experiment id and each condition's evaluation run). Numbers have one decimal."""
    m = _Shown(metrics)
    lines = [
        f"**{trial.model}** on **{trial.task}**, optimizer **{trial.optimizer}** (demos {trial.demos}, "
        f"n_labeled {trial.n_labeled}, seed {trial.seed}, data {trial.data}"
        + (", structured outputs" if trial.structured else "")
        + (", scored strictly" if getattr(trial, "scoring", "headline") == "strict" else "")
        + f"): **{status}**.",
        "",
        "| | score | strict (exact answer) |",
        "|---|---|---|",
        f"| baseline | {m.baseline_score:.1f} | {m.baseline_strict:.1f} |",
        f"| optimized | {m.optimized_score:.1f} | {m.optimized_strict:.1f} |",
    ]
    if delta is not None and delta.n:
        strict_delta = m.optimized_strict - m.baseline_strict
        lines.append(
            f"| delta | {m.delta_pp:+.1f} pp, paired 95% interval [{delta.ci_low:+.1f}, "
            f"{delta.ci_high:+.1f}] and {_p(delta.p_value)} from the {delta.test}, n = {delta.n} | "
            f"{strict_delta:+.1f} pp |"
        )
    if decision is not None:
        lines += [
            "",
            f"Sequential evaluation stopped after **{decision.n}** of {decision.n_max} examples per condition: "
            f"**{decision.reason}**; about {m.eval_calls_saved:.0f} evaluation calls saved.",
        ]
    lines += [
        "",
        f"{int(m.lm_calls)} LM calls ({int(m.eval_lm_calls)} evaluating, "
        f"{int(m.optimize_lm_calls)} optimizing); {m.optimize_seconds:.0f} s "
        f"optimizing, {m.eval_seconds:.0f} s evaluating; {_money(m.cost_usd)}.",
        "",
        "Per example: the Traces tab (each trace's gold answer and score are its assessments) and the "
        "`examples.json` table (Artifacts); the optimizer's candidates: the child runs `eval_N` and the metric `eval`.",
    ]
    if evaluations:
        lines += ["", _review_line(*evaluations)]
    cut = {k: int(metrics.get(f"truncated_calls_{k}", 0)) for k in ("baseline", "optimize", "optimized")}
    refused = int(m.context_errors)
    if any(cut.values()) or refused:
        lines += [
            "",
            f"**Context window reached**: {cut['baseline']} baseline, {cut['optimize']} optimizing and "
            f"{cut['optimized']} optimized call(s) filled the model's context or were counted short of their "
            f"prompt (the server may have dropped few-shot demos), and {refused} example(s) were refused as too "
            "long. The scores may not measure the whole prompt: raise the model's `context` in the registry. "
            "`arb report` keeps this trial out of its headline tables unless `--include-truncated`.",
        ]
    if compile_error:
        lines += ["", f"Compile error (the baseline program was kept): `{compile_error[:500]}`"]
    return "\n".join(lines)


def _money(usd: float) -> str:
    """A cost with one decimal: in cents below a dollar (an API model's trial often costs a fraction of a cent)."""
    return "$0" if usd == 0 else f"{100 * usd:.1f}¢" if usd < 1 else f"${usd:.1f}"


def _p(value: float) -> str:
    """A p-value in percent with one decimal (3.1%, not 0.03125), as a bound when it rounds to 0."""
    return f"p = {100 * value:.1f}%" if value >= 0.0005 else "p < 0.1%"


def _review_line(experiment_id: str, runs: dict[str, str]) -> str:
    """Links to each condition's evaluation run on MLflow's Evaluation runs page, the last one compared to the
    first (a demo ablation: k = demos against the baseline)."""
    page = f"#/experiments/{experiment_id}/evaluation-runs"
    first = next(iter(runs.values()))
    links = [
        f"[{condition}]({page}?selectedRunUuid={run_id}" + (f"&compareToRunUuid={first})" if run_id != first else ")")
        for condition, run_id in runs.items()
    ]
    return (
        f"Compare the conditions example by example: evaluation runs {', '.join(links)} (the Evaluation runs page, "
        "where *compare to* pairs each example's traces)."
    )
