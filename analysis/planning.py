"""What `arb plan` prints beside a grid's trials: per task, the smallest effect its `n_eval` detects and the
examples a routing decision at its margin needs, from how often earlier runs' answers disagreed (or a stated
assumption when the store has none)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from rich.table import Table

from trainables.record.tracking import default_tracking_uri
from trainables.stats import paired as stats
from trainables.stats import sequential
from trainables.stats.noninferiority import Rule
from trainables.tasks import get_task


def measured_discordance(tracking_uri: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task, how often earlier runs' conditions disagreed (`analysis.tables.discordance_by_task`), and how
    often cheaper models disagreed with the best API model (`analysis.tables.routing_discordance`); empty when the
    store does not exist yet (planning must not create one) or holds no runs."""
    uri = tracking_uri or default_tracking_uri()
    empty = pd.DataFrame(columns=["discordance", "runs", "examples"])
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return empty, empty
    from analysis.runs import load_study
    from analysis.tables import discordance_by_task, routing_discordance

    try:
        runs, examples = load_study(uri)
    except Exception as exc:  # an unreachable server: plan still works, on the assumption
        print(f"(no earlier runs read from {uri}: {type(exc).__name__}; power below is assumed)", file=sys.stderr)
        return empty, empty
    if runs.empty:
        return empty, empty
    return discordance_by_task(runs, examples), routing_discordance(runs, examples)


def discordance(task: str, measured: pd.DataFrame) -> tuple[float, str]:
    """A task's measured share of disagreeing examples and where it comes from, else the stated assumption."""
    if task in measured.index:
        row = measured.loc[task]
        return float(row["discordance"]), f"{int(row['runs'])} runs, {int(row['examples'])} examples"
    return stats.prior_discordance(), f"assumed: 0/1 at {stats.PRIOR_RATE:.0%}, ρ = {stats.PRIOR_RHO}"


def routing_plan(
    grid: str, tasks: list[str], n_eval: int, margin_pp: float, cheaper: int, measured: pd.DataFrame
) -> Table:
    """Per task: the test examples a routing decision at the grid's margin needs (a cheaper model shown
    non-inferior by the report's own interval when it is truly as good as the reference), beside n_eval and the
    size of the task's test split (where no number of examples can decide, it says so), from measured or assumed
    disagreement between a cheaper model and the reference; `cheaper`: the grid's candidates."""
    rule = Rule(margin_pp, candidates=max(1, cheaper))
    title = (f"examples a routing decision needs ({grid}: δ = {margin_pp:g} pp, {rule.confidence}, "
             f"a candidate truly as good as the reference, 0/1 scores; n_eval {n_eval})")  # fmt: skip
    table = Table(title=title)
    for col in ("task", "examples that differ", "from", "even chance", "80% power", f"n_eval {n_eval}", "test split"):
        table.add_column(col)
    for task in tasks:
        rate, source = discordance(task, measured)
        even, power = rule.examples_needed(rate), rule.examples_needed(rate, power=stats.POWER)
        verdict = "enough" if n_eval >= power else ("a coin flip" if n_eval >= even else "too few")
        split = get_task(task).test_split
        if not split:
            room = "unknown"
        elif split < even:
            room = f"{split:,}: too small to decide"
        elif split < power:
            room = f"{split:,}: less than 80% power"
        else:
            room = f"{split:,}"
        table.add_row(task, f"{rate:.0%}", source, f"{even:,.0f}", f"{power:,.0f}", verdict, room)
    return table


def power_table(grid: str, tasks: list[str], n_eval: int, stopping: str, measured: pd.DataFrame) -> Table:
    """Per task: the smallest paired effect the grid's n_eval detects with 80% power at α = 0.05 (the report's
    fixed-n test, and the sequence if the grid stops sequentially), from measured or assumed discordance."""
    table = Table(title=f"smallest effect {grid} detects (80% power, α = 0.05, n_eval {n_eval})")
    for col in ("task", "examples that differ", "from", "fixed n_eval: detects ≥"):
        table.add_column(col)
    if stopping == "sequential":
        table.add_column("sequential: decides by n_eval ≥")
    for task in tasks:
        rate, source = discordance(task, measured)
        cells = [task, f"{rate:.0%}", source, _pp(stats.detectable_effect_pp(n_eval, rate))]
        if stopping == "sequential":
            cells.append(_pp(sequential.detectable_effect_pp(n_eval, rate)))
        table.add_row(*cells)
    return table


def _pp(value: float) -> str:
    return "none up to 100 pp" if value != value else f"{value:.0f} pp"
