"""Phase 3, the demo ablation: take a finished trial's optimized program from MLflow and re-evaluate it with its
instruction and only its first k demos, k = 0..`demos`.

The source trial is named in the grid file, by the fields that make its key besides model, task and seed:

    optimizer: demo_ablation
    demos: [5]                  # k runs from 0 to 5
    optimizer_params:
      source: {grid: phase1, optimizer: mipro, teacher: gpt-4o, demos: 5, n_labeled: 200}

Instruction effect = score(k=0) − baseline; demo effect(k) = score(k) − score(k=0).
"""

from __future__ import annotations

import tempfile

import dspy
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from trainables.context import TrialContext, TrialOutcome
from trainables.errors import ArbError
from trainables.optimizers import get_optimizer
from trainables.optimizers.demo_ablation import parse_source
from trainables.record import results, schema, tracking
from trainables.record.schema import Metric, Tag
from trainables.record.scores import EvalResult
from trainables.stopping import comparison
from trainables.vocabulary import Trial, trial_key


def source_key(trial: Trial) -> str:
    """The grid point of the source trial (`Trial.point_key`: the source grid's n_eval, data and optimizer
    settings are its own, unknown here)."""
    src = parse_source(trial.optimizer_params)
    return trial_key(
        model=trial.model, task=trial.task, task_version=trial.task_version, optimizer=src.optimizer,
        teacher=src.teacher, demos=src.demos, n_labeled=src.n_labeled, seed=trial.seed,
    )  # fmt: skip


def find_source(client: MlflowClient, trial: Trial) -> Run:
    """The finished source run of an ablation trial, or an error saying which grid to run first."""
    src = parse_source(trial.optimizer_params)
    experiment = client.get_experiment_by_name(src.grid)
    run = tracking.finished_at_point(client, experiment.experiment_id, source_key(trial)) if experiment else None
    if run is None or run.data.tags.get(Tag.STATUS) != tracking.FINISHED:
        state = "compile failed" if run is not None else "no finished run"
        raise ArbError(
            f"demo ablation of {trial.model} · {trial.task}: {state} for its source trial in grid {src.grid!r} "
            f"({src.optimizer}, d{src.demos}, n{src.n_labeled}, seed {trial.seed})",
            f"run that grid first (arb run grid/phases/{src.grid}.yaml), or fix `optimizer_params.source`",
        )
    return run


def check_sources(tracking_uri: str, trials: list[Trial]) -> None:
    """Driver-side check before any work: every source run exists and has at least `demos` demos."""
    client = MlflowClient(tracking_uri)
    for trial in trials:
        if not get_optimizer(trial.optimizer).stored_program:
            continue
        run = find_source(client, trial)
        have = int(run.data.metrics.get("n_demos_chosen", 0))
        if trial.demos > have:
            raise ArbError(
                f"demo ablation of {trial.model} · {trial.task} asks for k up to {trial.demos}, "
                f"but the source program has {have} demos",
                f"set `demos: [{have}]` or ablate a (model, task) pair whose program kept demos",
            )


def load_program(client: MlflowClient, run: Run, fresh: dspy.Module) -> dspy.Module:
    """The source run's compiled program: its saved state loaded into a fresh program of the task."""
    with tempfile.TemporaryDirectory(prefix="arb-program-") as tmp:  # MLflow's default download dir is never removed
        fresh.load(client.download_artifacts(run.info.run_id, "program.json", dst_path=tmp))
    return fresh


def with_first_demos(program: dspy.Module, k: int) -> dspy.Module:
    """A copy of `program` with the same instructions and only the first k demos of each predictor."""
    copy = program.deepcopy()
    for predictor in copy.predictors():
        predictor.demos = list(predictor.demos[:k])
    return copy


def demo_counts(program: dspy.Module) -> list[int]:
    return [len(p.demos) for p in program.predictors()]


def run(ctx: TrialContext, baseline: EvalResult, shared_from: str | None) -> TrialOutcome:
    """The ablation trial: the source program with its instruction and its first k demos, k = 0..demos.
    `shared_from`: the run the baseline was read from, if any."""
    trial, pace = ctx.trial, ctx.pace
    client = MlflowClient(ctx.runtime.tracking_uri)
    source = find_source(client, trial)
    program = load_program(client, source, ctx.task.program(ctx.splits))
    have = max(demo_counts(program), default=0)
    if trial.demos > have:
        raise ArbError(
            f"the source program has {have} demos, fewer than demos={trial.demos}", "lower `demos` in the grid file"
        )
    scored = [ctx.evaluate(with_first_demos(program, k), f"k{k}") for k in range(trial.demos + 1)]
    full = with_first_demos(program, trial.demos)
    metrics = results.metrics(baseline, scored[-1], ctx.meter, (ctx.student_entry, ctx.teacher_entry), full)
    metrics.update({schema.score_k(k): r.score for k, r in enumerate(scored)})
    metrics.update(
        {
            Metric.INSTRUCTION_EFFECT_PP: scored[0].score - baseline.score,
            Metric.DEMO_EFFECT_PP: scored[-1].score - scored[0].score,
            Metric.OPTIMIZE_SECONDS: 0.0,
            Metric.EVAL_SECONDS: pace.phases.seconds["eval"],
            Metric.EVAL_IN_FLIGHT: sum(r.mean_in_flight for r in [baseline, *scored]) / (len(scored) + 1),
        }
    )
    rows = baseline.rows() + [row for r in scored for row in r.rows()]
    ctx.evals.done([results.outcome(baseline, borrowed=shared_from is not None), *map(results.outcome, scored)])
    tags = {Tag.SOURCE_RUN: source.info.run_id, **results.context_tags(metrics)}
    with pace.phases.phase("publish"):
        delta = comparison(baseline, scored[-1], None)
        tags.update(results.publish_trial(trial, ctx.evals, tracking.FINISHED, ctx.splits, full, ctx.student, metrics,
                                          results.Comparison(delta), rows, pace, compiled=False))  # fmt: skip
    return TrialOutcome(tracking.FINISHED, metrics, results.artifacts(full, rows), tags)
