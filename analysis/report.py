"""`arb report`: every table of the study for a set of grids, as Markdown, CSV, PNG and an offline dashboard.

The report is also logged to MLflow, as the artifacts of one `report` run per grid experiment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis import plots, tables
from analysis.dashboard import write_dashboard
from analysis.routing import per_call_costs, routing_tables, write_gateway_config
from analysis.runs import ReportCache, known_grids, load_study, mark_api, split_truncated, study_registry
from trainables.errors import ArbError
from trainables.record.schema import Tag
from trainables.registry import ModelRegistry
from trainables.stats.noninferiority import MARGIN_PP
from trainables.stats.paired import noise_floor_pp

MAX_MARKDOWN_ROWS = 60
"""Longer tables are cut in summary.md: a reader scans the top; the CSV holds everything."""


@dataclass(frozen=True)
class Inputs:
    """What every table is built from: the runs (with `api` marked), their per-example scores, the registry, the
    routing rule's margin and reference, and what is computed once for several tables."""

    runs: pd.DataFrame
    examples: pd.DataFrame
    index: tables.ScoreIndex
    registry: ModelRegistry
    margin_pp: float
    costs: pd.DataFrame
    routing: tuple[pd.DataFrame, pd.DataFrame]
    """(routing decisions, every candidate's row)."""


@dataclass(frozen=True)
class Table:
    """A report table: its file name (`<name>.csv`), its section title in summary.md (empty: a CSV and the
    dashboard only), how it is built, and a note printed under the title (`{margin}` is the margin)."""

    name: str
    title: str
    build: Callable[[Inputs], pd.DataFrame]
    note: str = ""


def _reasoning(i: Inputs) -> pd.DataFrame:
    return tables.reasoning_table(i.runs, {n for n, m in i.registry.models.items() if m.reasoning})


STUDY = [
    Table("per_model", "Per optimizer and model (average over tasks)",
          lambda i: tables.per_model_summary(i.runs, i.index)),
    Table("api_vs_local", "Best API baseline against the best optimized local model",
          lambda i: tables.api_vs_best_local(i.runs, i.index, i.margin_pp),
          "Verdict: non-inferior only if the gap's 95% interval lies above −{margin:g} pp; worse than margin if it "
          "lies below; else undecided."),
    Table("delta_matrix", "Optimization delta (pp), (optimizer, task) × model", lambda i: tables.delta_matrix(i.runs)),
    Table("local_beats_api", "Optimized local model above optimized API model",
          lambda i: tables.local_beats_api(i.runs)),
    Table("tiers", "Tiers by cross-model std of deltas", lambda i: tables.tiers(i.runs)),
    Table("demo_distribution", "Demo counts chosen by the optimizer", lambda i: tables.demo_distribution(i.runs)),
    Table("ablation", "Instruction and demo effects: demo ablation runs (phase 3)",
          lambda i: tables.ablation_effects(i.runs)),
    Table("reasoning", "Reasoning models, unoptimized (phase 4)", _reasoning),
    Table("low_data", "Low-data tipping point: runs that differ only in n labeled (phase 5)",
          lambda i: tables.low_data_table(i.runs)),
]  # fmt: skip
"""The study's nine tables, numbered in this order."""

TABLES = [
    *(Table(t.name, f"{n}. {t.title}", t.build, t.note) for n, t in enumerate(STUDY, start=1)),
    Table("significance", "Every delta with its 95% interval, p-value and verdict, all three from the test named in "
          "`test`", lambda i: tables.delta_significance(i.runs, i.index)),
    Table("format", "Format or skill: each optimization gain under the strict score, split into the skill the "
          "task's metric sees and the answer format it forgives", lambda i: tables.format_or_skill(i.runs, i.examples),
          "strict_delta_pp = skill_pp + format_pp, in pp of the per-example score (docs/tasks.md says what each "
          "task's strict score and its metric accept). `format_pp`: answers the optimization made exact that the "
          "task's metric already credited to the baseline (units, extra words, case); `format_share` of the strict "
          "gain. `not shown` means the interval includes 0, not that the part is zero."),
    Table("optimizers", "Optimizers compared on the same test examples (b − a, paired 95% interval named in `test`)",
          lambda i: tables.optimizer_pairs(i.runs, i.index)),
    Table("routing", "Routing advice", lambda i: i.routing[0],
          "Non-inferiority margin δ = {margin:g} pp: a task is routed to the cheapest model whose interval for "
          "(model − reference) lies above −δ, the 95% error rate split over the task's candidates (Bonferroni); "
          "`keep reference` when every cheaper one lies below −δ; else undecided, with about how many more examples "
          "would decide it (`arb route` adds them). Gateway config for these decisions: `routing.litellm.yaml`."),
    Table("routing_candidates", "", lambda i: i.routing[1]),
    Table("cost", "", lambda i: i.costs.merge(i.runs[["run_id", "model", "task", "optimized_score"]])),
]  # fmt: skip
"""Every table of the report, in summary.md's order: the CSVs, the summary and the dashboard all read this list."""
TITLES = {t.name: t.title for t in TABLES if t.title}


def build_tables(
    runs: pd.DataFrame, examples: pd.DataFrame, registry: ModelRegistry, margin_pp: float = MARGIN_PP,
    reference: str | None = None,
) -> dict[str, pd.DataFrame]:  # fmt: skip
    """All report tables from the runs and per-example frames; local against API by `registry`'s word for it, and
    the routing rule at `margin_pp` against `reference` (default: each task's best API model)."""
    runs = mark_api(runs, registry)
    costs = per_call_costs(runs, examples, registry)
    index = tables.ScoreIndex(examples)
    routing = routing_tables(runs, examples, registry, index, costs, margin_pp, reference)
    inputs = Inputs(runs, examples, index, registry, margin_pp, costs, routing)
    return {t.name: t.build(inputs) for t in TABLES}


def write_report(
    tracking_uri: str, grids: list[str] | None, out: Path, registry: ModelRegistry | None = None, log: bool = True,
    cache: ReportCache | None = None, include_truncated: bool = False, margin_pp: float = MARGIN_PP,
    reference: str | None = None,
) -> Path:  # fmt: skip
    """Write the report to `out` and log it to MLflow; returns the path of `summary.md`. With `cache`, done runs
    loaded by an earlier report are not fetched again (`analysis.runs.ReportCache`). Trials with a call that
    reached its context window are listed apart and left out of the tables unless `include_truncated`."""
    if grids:
        known = known_grids(tracking_uri)
        unknown = [g for g in grids if g not in known]
        if unknown:
            raise ArbError(
                f"no grid named {', '.join(unknown)} in {tracking_uri}",
                f"use one of: {', '.join(known)}" if known else "run a grid first (`arb run smoke`)",
            )
    runs, examples = load_study(tracking_uri, grids, cache)
    if runs.empty:
        raise ArbError(f"no runs for {grids or 'any grid'} in {tracking_uri}", "run a grid first (`arb run smoke`)")
    kept, cut = split_truncated(runs)
    if not include_truncated:
        runs = kept
        examples = examples[examples["run_id"].isin(set(kept["run_id"]))]
    registry = study_registry(tracking_uri, grids, registry)
    path = render(runs, examples, registry, out, truncated=cut, included=include_truncated,
                  margin_pp=margin_pp, reference=reference)  # fmt: skip
    if log:
        _log_to_mlflow(tracking_uri, sorted(runs["experiment"].unique()), out)
    return path


def render(
    runs: pd.DataFrame, examples: pd.DataFrame, registry: ModelRegistry, out: Path,
    truncated: pd.DataFrame | None = None, included: bool = False, margin_pp: float = MARGIN_PP,
    reference: str | None = None,
) -> Path:  # fmt: skip
    """Everything but the MLflow upload: tables, plots, dashboard. Pure given its inputs. `truncated`: trials
    that reached their context window, listed in their own section (and in the tables only if `included`)."""
    out.mkdir(parents=True, exist_ok=True)
    built = build_tables(runs, examples, registry, margin_pp, reference)
    write_gateway_config(built["routing"], registry, out / "routing.litellm.yaml")
    names = sorted(set(runs["experiment"]) | set(truncated["experiment"] if truncated is not None else []))
    lines = [f"# Report: {', '.join(names)}", "", _noise_line(runs), ""]
    if truncated is not None and not truncated.empty:
        cols = ["experiment", "model", "task", "optimizer", "n_labeled", "truncated_calls", "context_errors"]
        truncated[cols].to_csv(out / "truncated.csv", index=False)
        how = "included in the tables below" if included else "left out of the tables below (`--include-truncated`)"
        lines += [
            "## Trials that reached their context window",
            "",
            f"{len(truncated)} trial(s) had calls whose prompt filled the model's context or was counted short of "
            f"its size (the server may have dropped few-shot demos), or was refused as too long; {how}. Raise the "
            "model's `context` in the registry and run them again.",
            "",
            _markdown(truncated[cols].reset_index(drop=True), "truncated.csv"),
            "",
        ]
    for spec in TABLES:
        if not spec.title:
            continue
        table = built[spec.name]
        table.to_csv(out / f"{spec.name}.csv", index=not isinstance(table.index, pd.RangeIndex))
        note = spec.note.format(margin=margin_pp)
        lines += [f"## {spec.title}", "", *([note, ""] if note else []), _markdown(table, f"{spec.name}.csv"), ""]
    runs.to_csv(out / "runs.csv", index=False)
    if not built["delta_matrix"].empty:
        plots.delta_heatmap(built["delta_matrix"], out / "delta_matrix.png")
        plots.per_model_bars(built["per_model"], out / "per_model.png")
        lines += ["![delta matrix](delta_matrix.png)", "", "![per model](per_model.png)", ""]
    if not built["routing_candidates"].empty:
        built["routing_candidates"].to_csv(out / "routing_candidates.csv", index=False)
        plots.routing_chart(built["routing_candidates"], margin_pp, out / "routing.png")
        lines += ["![cost against quality per task](routing.png)", ""]
    write_dashboard(out / "dashboard", built)
    lines += ["Interactive dashboard: `dashboard/index.html` (works offline).", ""]
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _noise_line(runs: pd.DataFrame) -> str:
    """How many test examples the runs used and the worst-case noise floor that implies (a range if they differ)."""
    sizes = sorted({int(n) for n in runs["n_eval"].dropna()})
    head = f"{len(runs)} trial runs. Scores in percent."
    if not sizes:
        return head
    if len(sizes) == 1:
        n = f"n = {sizes[0]} test examples per condition"
        floor = f"±{noise_floor_pp(sizes[0]):.1f} pp"
    else:
        n = f"n = {sizes[0]}–{sizes[-1]} test examples per condition, depending on the run"
        low, high = sizes[0], sizes[-1]
        floor = f"±{noise_floor_pp(high):.1f} pp (n = {high}) to ±{noise_floor_pp(low):.1f} pp (n = {low})"
    return f"{head} With {n}, the worst-case noise floor of a delta is {floor}; verdicts use the paired test instead."


def _markdown(table: pd.DataFrame, csv_name: str) -> str:
    """A table as Markdown, cut to `MAX_MARKDOWN_ROWS` (the CSV next to it has every row)."""
    if table.empty:
        return "_no runs for this table yet_"
    shown = table.head(MAX_MARKDOWN_ROWS)
    if isinstance(shown.index, pd.MultiIndex):  # (optimizer, model): one column each, not a tuple per row
        shown = shown.reset_index()
    # object dtype keeps integer columns (counts) from being printed as floats
    # A plain row number is not information; a named index (e.g. the model in table 1) is.
    text = shown.astype(object).to_markdown(floatfmt=".2f", index=not isinstance(shown.index, pd.RangeIndex))
    if len(table) > len(shown):
        text += f"\n\n_{len(table) - len(shown)} more rows in `{csv_name}`._"
    return text


def _log_to_mlflow(tracking_uri: str, experiments: list[str], out: Path) -> None:
    client = MlflowClient(tracking_uri)
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            continue
        found = client.search_runs([exp.experiment_id], filter_string="tags.`arb.kind` = 'report'", max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            exp.experiment_id, run_name="report", tags={Tag.KIND: "report"}
        ).info.run_id  # fmt: skip
        client.set_tag(run_id, Tag.REPORT_TIME, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        client.log_artifacts(run_id, str(out), artifact_path="report")
        client.set_terminated(run_id)
