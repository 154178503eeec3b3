"""`arb route`: per task, race the cheaper models' optimized programs against the reference on more test examples
until the routing decision is made, then record it, register it and write it as a gateway config.

For each task of the grids, the reference (the named model, else the best API model) and the cheaper candidates
(`analysis.routing.contenders`) enter a race (`trainables.stats.race`). Each round scores the next batch of the task's
seeded test order on every candidate still open and on the reference (once per example, shared), in parallel:
one Ray task per program, on a node that can serve its model (an Ollama node's slot, `ollama_slots`, kept on the
node that already served that model when it is still there: Ollama loads a model once per node). The trials'
own per-example scores are the race's first examples.

The record (`trainables.record.races`): one MLflow run per task's race in the grid's experiment, with every
look's intervals, the outcomes after every round (a killed race resumes from the last round recorded), and the
decision. The decision is registered: per task a registered model `arb.<grid>.<task>` whose version is the
chosen program's logged model, with alias `routed` (the reference's program when nothing qualifies).
`routing.litellm.yaml` routes each task to its chosen model through a LiteLLM proxy.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from grid.embedded import DEFAULT_PORT, check_embedded
from grid.launch import stored_spec
from grid.placement import SLOTS
from grid.session import session
from trainables.errors import ArbError
from trainables.record import experiments
from trainables.record.races import Outcomes, RaceRecord
from trainables.record.registered import point_alias, registered_name
from trainables.record.schema import Tag
from trainables.registry import ModelRegistry, load_registry, recorded_registry
from trainables.stats.noninferiority import MARGIN_PP
from trainables.stats.paired import ALPHA
from trainables.stats.race import BATCH, ZONE_PP, Entrant, Race, RaceRule, RaceState
from trainables.vocabulary import Scoring

ROUTED_ALIAS = "routed"


@dataclass
class Program:
    """One trial's optimized program in a race."""

    name: str
    run_id: str
    model: str
    model_uri: str | None
    usd_per_1k: float
    latency_s_per_1k: float
    ollama: bool = False


@dataclass
class TaskRace:
    """One task's race: who runs, on which examples, what is known so far, and where it is recorded."""

    grid: str
    task: str
    reference: Program
    candidates: list[Program]
    data: str
    seed: int
    n_val: int
    structured: bool
    order: list[str]
    """Example ids of the task's seeded test order, up to the race's n_max."""
    unit: str = "pp"
    scoring: Scoring = "headline"
    """The trials' scoring (`Trial.scoring`): the race scores its new examples the same way."""
    """What a gap is measured in: the per-example score's points (for a corpus-level metric, not its units)."""
    outcomes: Outcomes = field(default_factory=dict)
    """Program name → example id → score."""
    record: RaceRecord | None = None

    @property
    def rounds(self) -> int:
        return self.record.rounds if self.record else 0

    @property
    def recorded(self) -> RaceRecord:
        assert self.record is not None, "the race's record is opened when it is planned"
        return self.record

    def scores(self, program: Program) -> np.ndarray:
        """The program's scores on the seeded order, as far as they are known without a gap."""
        known = self.outcomes.get(program.name, {})
        out = []
        for example_id in self.order:
            if example_id not in known:
                break
            out.append(known[example_id])
        return np.array(out, dtype=float)


@dataclass(frozen=True)
class Settings:
    """What a race decides at and how it spends examples (`arb route`'s options)."""

    margin_pp: float = MARGIN_PP
    alpha: float = ALPHA
    batch: int = BATCH
    n_max: int | None = None
    """None: the test split's size."""
    reference: str | None = None
    rounds: int | None = None
    """Stop after this many rounds in this invocation (a budget); `arb route` again continues."""
    zone_pp: float = ZONE_PP
    """Indifference zone ε: a candidate shown no better than −margin + ε leaves the race."""


def race_key(grid: str, task: str, reference: Program, candidates: list[Program], settings: Settings) -> str:
    """What identifies a race: the programs and the rule. Another margin is another race (its own run)."""
    fields: list[Any] = [grid, task, reference.run_id, sorted(c.run_id for c in candidates), settings.margin_pp,
                         settings.alpha, settings.batch, settings.n_max]  # fmt: skip
    if settings.zone_pp != 0:  # a race recorded before the zone existed raced without one: its key stays valid
        fields.append(settings.zone_pp)
    raw = json.dumps(fields)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def plan_races(tracking_uri: str, grids: list[str], registry: ModelRegistry, settings: Settings) -> list[TaskRace]:
    """The races of the grids' tasks: reference and candidates from the finished optimized trials, the trials'
    per-example scores as the first outcomes, and a race already recorded (same programs and rule) resumed."""
    from analysis.routing import contenders, per_call_costs, program_name
    from analysis.runs import load_study, mark_api
    from analysis.tables import optimized_runs

    runs, examples = load_study(tracking_uri, grids)
    if runs.empty:
        raise ArbError(f"no runs for {', '.join(grids)} in {tracking_uri}", "run the grid first (`arb run GRID`)")
    runs = mark_api(runs[runs["status"] == "finished"], registry)
    costs = per_call_costs(runs, examples, registry)
    done = optimized_runs(runs).merge(costs, on="run_id", how="left")
    if settings.reference is not None and settings.reference not in set(done["model"]):
        raise ArbError(f"reference model {settings.reference!r} has no finished optimized run in {', '.join(grids)}",
                       f"name one of: {', '.join(sorted(set(done['model']))) or 'none'}")  # fmt: skip
    client = MlflowClient(tracking_uri)
    opt = examples[examples["condition"] == "optimized"]
    races = []
    for task, group in done.groupby("task"):
        field_ = contenders(group, settings.reference)
        if field_ is None:
            print(f"{task}: no reference model ran it (an API model, or --reference): skipped", file=sys.stderr)
            continue
        ref_row, others = field_
        ref_params = client.get_run(ref_row.run_id).data.params
        same = [c for c in others if _params_of(client, c.run_id, ref_params)]
        if not same:
            print(f"{task}: no cheaper model ran it on the reference's examples: nothing to race", file=sys.stderr)
            continue
        reference = _program(ref_row, program_name(ref_row, group), registry, client)
        candidates = [_program(c, program_name(c, group), registry, client) for c in same]
        race = _task_race(str(grids[0]), str(task), reference, candidates, ref_params, settings)
        for program in [reference, *candidates]:
            mine = opt[opt["run_id"] == program.run_id]
            race.outcomes[program.name] = dict(zip(mine["example_id"].astype(str), mine["score"].astype(float),
                                                   strict=True))  # fmt: skip
        _open_record(client, race, settings)
        races.append(race)
    if not races:
        raise ArbError(f"nothing to race in {', '.join(grids)}",
                       "a race needs a finished optimized trial of an API model (or --reference) and of a cheaper "
                       "model on the same task and seed")  # fmt: skip
    return races


def _params_of(client: MlflowClient, run_id: str, ref: dict[str, str]) -> bool:
    """Whether a candidate trial saw the same test examples as the reference (same data source and seed). `n_eval`
    need not match: the test order is the seeded shuffle of the split cut at n_eval (`seeded_indices`), so trials
    of different n_eval share a prefix, and the race pairs outcomes by example id and scores each program from
    where its own outcomes end."""
    params = client.get_run(run_id).data.params
    same_scoring = params.get("scoring", "headline") == ref.get("scoring", "headline")  # runs before it: headline
    return same_scoring and all(params.get(k) == ref.get(k) for k in ("data", "seed", "task_version"))


def _program(row: Any, name: str, registry: ModelRegistry, client: MlflowClient) -> Program:
    entry = registry.get(str(row.model))
    tags = client.get_run(row.run_id).data.tags
    return Program(name, row.run_id, str(row.model), tags.get(Tag.MODEL_URI), _num(row.usd_per_1k),
                   _num(row.latency_s_per_1k), entry.provider_spec.per_node)  # fmt: skip


def _num(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def _task_race(
    grid: str, task: str, reference: Program, candidates: list[Program], params: dict[str, str], settings: Settings
) -> TaskRace:  # fmt: skip
    """The race's examples: the task's seeded test order (the trials' order), up to n_max."""
    from trainables.tasks import get_task

    data, seed, n_val = params.get("data", "hub"), int(params.get("seed", 0)), int(params.get("n_val", 20))
    limit = settings.n_max or 10**9
    splits = get_task(task).load(data, seed, 0, n_val, limit)
    order = [str(ex.get("id", "")) for ex in splits.test]
    structured = params.get("structured", "False") == "True"
    return TaskRace(grid, task, reference, candidates, data, seed, n_val, structured, order, unit_of(task),
                    scoring="strict" if params.get("scoring") == "strict" else "headline")  # fmt: skip


def unit_of(task: str) -> str:
    """The unit of a race's gaps: pp of the task's metric, or, where that metric is corpus-level (extraction's
    micro F1), pp of the per-example score the race compares, said as such."""
    from trainables.tasks import get_task

    t = get_task(task)
    return f"pp of mean per-example {t.metric_name}, not corpus {t.metric_name}" if t.corpus_metric else "pp"


def _open_record(client: MlflowClient, race: TaskRace, settings: Settings) -> None:
    """Find the task's race run (same programs and rule) or start one; load the outcomes it recorded."""
    exp = client.get_experiment_by_name(race.grid)
    assert exp is not None  # load_study found its runs
    names = [c.name for c in race.candidates]
    params = {"task": race.task, "reference": race.reference.name, "candidates": ", ".join(names),
              "margin_pp": settings.margin_pp, "alpha": settings.alpha, "batch": settings.batch,
              "n_max": len(race.order), "seed": race.seed, "data": race.data}  # fmt: skip
    race.record = RaceRecord.open(
        client,
        exp.experiment_id,
        race_key(race.grid, race.task, race.reference, race.candidates, settings),
        task=race.task,
        grid=race.grid,
        params=params,
        run_name=f"race · {race.task} · {race.reference.name} vs {', '.join(names)}",
    )
    for name, scores in race.record.recorded.items():
        race.outcomes.setdefault(name, {}).update(scores)


def progress_line(race: TaskRace, state: RaceState) -> str:
    """A task's race after a look: candidates left, examples so far, current intervals."""
    parts = [f"{s.name} {s.delta_pp:+.1f} [{s.ci_low:+.1f}, {s.ci_high:+.1f}] {s.verdict} (n {s.n})"
             for s in state.standings.values()]  # fmt: skip
    parts.append(f"gaps in {race.unit}")
    left = f"{len(state.racing)} of {len(race.candidates)} racing"
    return f"{race.task} · round {race.rounds} · {left} · reference n {state.n_reference} · " + " · ".join(parts)


def run_races(
    races: list[TaskRace], tracking_uri: str, registry: ModelRegistry, settings: Settings, *,
    registry_path: str | None = None, lm_cache: bool = True, trial_cpus: float = 1.0,
    embedded_port: int = DEFAULT_PORT, home: Path, stream: Any = sys.stderr,
) -> list[RaceState]:  # fmt: skip
    """Race every task (their rounds in parallel, each round's programs in parallel), recording each look."""
    client = MlflowClient(tracking_uri)
    used = sorted({p.model for r in races for p in [r.reference, *r.candidates]})
    registry.require_keys(used)
    check_embedded(used, registry, embedded_port)
    rule = RaceRule(settings.margin_pp, settings.alpha, settings.batch, max(len(r.order) for r in races),
                    settings.zone_pp)  # fmt: skip
    engines = {r.task: Race(rule, r.reference.name, [_entrant(p) for p in r.candidates], len(r.order))
               for r in races}  # fmt: skip
    states: dict[str, RaceState] = {}
    with session(used, registry, tracking_uri, home, registry_path=registry_path, embedded_port=embedded_port,
                 stream=stream) as opened:  # fmt: skip
        import ray

        from grid.placement import ollama_nodes

        runtime = opened.runtime.model_dump()
        # Ollama programs take a node's slot only where nodes advertise them (a cluster); on one machine,
        # as for trials, nothing is pinned.
        slots = bool(ollama_nodes(ray.nodes()))
        homes: dict[str, str] = {}  # model → the node that last served it
        budget = settings.rounds
        while True:
            pending: dict[str, tuple[TaskRace, Any]] = {}
            for race in races:
                state = _look(race, engines[race.task], stream)
                states[race.task] = state
                if state.decision is None and budget != 0:
                    pending[race.task] = (race, engines[race.task].next_round(state))
            if not pending:
                break
            _play_round(list(pending.values()), runtime, lm_cache, trial_cpus, homes if slots else None)
            budget = None if budget is None else budget - 1
    # MLflow resolves a `models:/` source of a new model version through the process's tracking URI, not the
    # client's (MLflow 3.17: "Logged model with ID … not found" otherwise)
    mlflow.set_tracking_uri(tracking_uri)
    for race in races:
        decision = states[race.task].decision
        if decision is not None:
            _finish(client, race, states[race.task], settings)
    return [states[r.task] for r in races]


def _entrant(p: Program) -> Entrant:
    return Entrant(p.name, p.usd_per_1k if not math.isnan(p.usd_per_1k) else math.inf,
                   p.latency_s_per_1k if not math.isnan(p.latency_s_per_1k) else math.inf)  # fmt: skip


def _look(race: TaskRace, engine: Race, stream: Any) -> RaceState:
    ref = race.scores(race.reference)
    state = engine.judge(ref, {c.name: race.scores(c) for c in race.candidates})
    race.recorded.log_look(state.standings.values(), len(state.racing))
    print(progress_line(race, state), file=stream, flush=True)
    return state


def _play_round(
    work: list[tuple[TaskRace, Any]], runtime: dict[str, Any], lm_cache: bool,
    trial_cpus: float, homes: dict[str, str] | None,
) -> None:  # fmt: skip
    """One round of every open task: each program's slice as a Ray task, all at once; the outcomes recorded.
    `homes`: the node that last served each model, on a cluster of Ollama nodes (None on one machine)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trainables.race_round import Piece, score_slice

    def where() -> str:
        return str(ray.get_runtime_context().get_node_id())

    @ray.remote
    def piece(p: dict[str, Any], rt: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return score_slice(p, rt), where()

    futures = []
    for race, step in work:
        slices = [(race.reference, step.reference)] if len(step.reference) else []
        by_name = {c.name: c for c in race.candidates}
        slices += [(by_name[name], span) for name, span in step.candidates.items() if len(span)]
        for program, span in slices:
            p = Piece(run_id=program.run_id, model=program.model, task=race.task, data=race.data, seed=race.seed,
                      n_val=race.n_val, structured=race.structured, scoring=race.scoring, start=span.start,
                      stop=span.stop, lm_cache=lm_cache).model_dump()  # fmt: skip
            options: dict[str, Any] = {"num_cpus": trial_cpus}
            if program.ollama and homes is not None:
                options["resources"] = {SLOTS: 1}
            if homes is not None and program.model in homes:  # the node that holds the model already: no second load
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(homes[program.model], soft=True)
            futures.append((race, program, piece.options(**options).remote(p, runtime)))
    failure: BaseException | None = None
    for race, program, future in futures:
        try:
            result, node = ray.get(future)
        except Exception as exc:  # the other pieces' outcomes are still recorded: a resumed race does not redo them
            failure = failure or exc
            continue
        if homes is not None:
            homes[program.model] = node
        race.outcomes.setdefault(program.name, {}).update(dict(zip(result["example_id"], result["score"], strict=True)))
    for race, _ in work:
        race.recorded.save_round(race.outcomes, played=failure is None)
    if failure is not None:
        raise failure


def _finish(client: MlflowClient, race: TaskRace, state: RaceState, settings: Settings) -> None:
    """Record the decision on the race run, the per-example outcomes as a table, and register the chosen program
    under the task's alias."""
    decision = state.decision
    assert decision is not None
    chosen = race.reference if decision.chosen is None else next(
        c for c in race.candidates if c.name == decision.chosen.name
    )  # fmt: skip
    version = register(client, race, chosen, decision.kind)
    lines = [f"**{decision.words}**", "", f"Margin δ = {settings.margin_pp:g} pp, indifference zone ε = "
             f"{settings.zone_pp:g} pp; {race.rounds} round(s) of {settings.batch}; reference scored on "
             f"{state.n_reference} examples; gaps in {race.unit}.", ""]  # fmt: skip
    lines += [f"- {s.name}: {s.delta_pp:+.1f} [{s.ci_low:+.1f}, {s.ci_high:+.1f}] on {s.n} examples, {s.verdict}"
              for s in state.standings.values()]  # fmt: skip
    if version:
        lines += ["", f"Registered: `{registered_name(race.grid, race.task)}` version {version}, alias "
                  f"`{ROUTED_ALIAS}`."]  # fmt: skip
    models = {p.name: p.model for p in [race.reference, *race.candidates]}
    race.recorded.finish(race.outcomes, models, decision.kind, chosen.model, "\n".join(lines))


def register(client: MlflowClient, race: TaskRace, chosen: Program, kind: str) -> str | None:
    """Register the chosen program's logged model as a version of the task's registered model and point alias
    `routed` at it. None if the trial logged no model."""
    if not chosen.model_uri:
        print(f"{race.task}: trial run {chosen.run_id} logged no model; nothing registered", file=sys.stderr)
        return None
    tags = {Tag.MODEL: chosen.model, Tag.DECISION: kind, Tag.REFERENCE: race.reference.model}
    return point_alias(client, registered_name(race.grid, race.task), ROUTED_ALIAS, chosen.model_uri,
                       chosen.run_id, tags, f"The program arb routes task {race.task} to.")  # fmt: skip


def decisions_frame(races: list[TaskRace], states: list[RaceState]) -> pd.DataFrame:
    """One row per task: what the race decided (the routing table's columns that the gateway config reads)."""
    rows = []
    for race, state in zip(races, states, strict=True):
        d = state.decision
        chosen = race.reference if d is None or d.chosen is None else next(
            c for c in race.candidates if c.name == d.chosen.name
        )  # fmt: skip
        rows.append({"task": race.task, "reference": race.reference.model,
                     "decision": d.kind if d else "racing", "route_to": chosen.model,
                     "examples": state.n_reference, "rounds": race.rounds, "why": d.words if d else "",
                     "unit": race.unit})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class GridSetup:
    """What a race keeps of the grid it races: the registry it ran with (or `--models`), that file's path, and the
    grid's LM-cache and CPU settings."""

    registry: ModelRegistry
    registry_path: str | None
    lm_cache: bool
    trial_cpus: float


def grid_setup(grid: str, tracking_uri: str, models: Path | None) -> GridSetup:
    """The grid's setup, read back from its experiment."""
    spec, registry_path = stored_spec(tracking_uri, grid)
    recorded = experiments.stored_models(tracking_uri, grid)
    if models is None and registry_path and not Path(registry_path).exists() and recorded:
        # the file the grid ran with is gone (another machine, an imported archive): the entries it recorded
        # as it ran are the registry
        registry = recorded_registry(load_registry(None), recorded, prefer_recorded=True)
        return GridSetup(registry, None, spec.lm_cache, spec.trial_cpus)
    path = str(models) if models else registry_path
    registry = recorded_registry(load_registry(path), recorded, prefer_recorded=False)
    return GridSetup(registry, path, spec.lm_cache, spec.trial_cpus)
