"""`arb`: run experiment grids of local vs. API LLMs, before and after DSPy optimization.

arb plan smoke            # what a grid would run, without running it
arb check phase1          # can its data be read and its Ollama models served? (arb run checks this first)
arb run smoke             # run it (local Ray, embedded llama.cpp models, local MLflow store)
arb status                # finished / running / errored / pending trials per grid
arb resume smoke          # finish an interrupted grid: only unfinished trials run
arb ui                    # browse the runs in the MLflow UI
arb report smoke --out report/
arb route phase1          # race cheaper models against the reference on more examples; register the decision
arb export phase1         # the grid's runs, artifacts and tables in one .tar.gz; `arb import` loads it elsewhere
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainables.errors import ArbError

if TYPE_CHECKING:
    from rich.console import Console

    from grid.spec import GridSpec

app = typer.Typer(
    help="Can a cheap local model, prompt-optimized, do this task as well as GPT-4o? Run grids that measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite in $ARB_HOME (./arb-results).",
    ),
]
ModelsFile = Annotated[
    Path | None, typer.Option("--models", help="Model registry YAML (default: the shipped grid/models.yaml).")
]
EmbeddedPort = Annotated[int, typer.Option(help="First port for the embedded llama.cpp servers.")]
EMBEDDED_PORT = 8761
"""`grid.embedded.DEFAULT_PORT`, written here so `arb --help` does not import the server code."""
MARGIN_DEFAULT = 5.0
"""`trainables.stats.noninferiority.MARGIN_PP`, written here so `arb --help` does not import numpy and scipy."""
Margin = Annotated[
    float,
    typer.Option(
        "--margin", min=0.1, max=100.0,
        help="Non-inferiority margin δ in pp: a cheaper model is routed to only if its interval for "
        "(model − reference) lies above −δ.",
    ),
]  # fmt: skip
Reference = Annotated[
    str | None,
    typer.Option(
        "--reference",
        help="The model a task would be routed away from (default: each task's best API model, i.e. a registry "
        "entry served remotely or priced per token).",
    ),
]


def _uri(tracking_uri: str | None, *, sweep: bool = False) -> str:
    from trainables.record.tracking import check_writable, default_home, default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if not sweep:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return uri
    check_writable(default_home())  # Ray's results and the embedded servers' logs go there, whatever the store
    if uri.startswith("sqlite:///"):
        check_writable(Path(uri.removeprefix("sqlite:///")).parent)
    return uri


def _me() -> str:
    """How the user invoked arb (e.g. `.venv/bin/arb`), so printed hints can be pasted as they are."""
    argv0 = Path(sys.argv[0])
    if argv0.name != "arb":
        return "arb"
    try:
        return str(argv0.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(argv0) if argv0.is_absolute() and not os.environ.get("VIRTUAL_ENV") else "arb"


def _launch(
    specs: list[GridSpec], registry_path: str | None, tracking_uri: str | None, models: Path | None,
    embedded_port: int,
) -> None:  # fmt: skip
    """Run the grids in order (a grid and its `then:` grids), one summary line each, then where to look."""
    from grid.launch import run_stages

    run_stages(specs, str(models) if models else registry_path, _uri(tracking_uri, sweep=True), embedded_port,
               me=_me(), own_store=tracking_uri is not None)  # fmt: skip


@app.command()
def run(
    gridfile: Annotated[str, typer.Argument(help="Grid YAML file, or the name of a shipped grid (e.g. smoke).")],
    tracking_uri: TrackingUri = None,
    models: ModelsFile = None,
    embedded_port: EmbeddedPort = EMBEDDED_PORT,
) -> None:
    """Run every trial of a grid, then the grids its `then:` lists; finished trials are reused, not re-run."""
    from grid.spec import load_grid, stages

    _launch(stages(load_grid(gridfile)), None, tracking_uri, models, embedded_port)


@app.command()
def check(
    gridfile: Annotated[str, typer.Argument(help="Grid YAML file, or the name of a shipped grid (e.g. phase1).")],
    models: ModelsFile = None,
    tracking_uri: TrackingUri = None,
    embedded_port: EmbeddedPort = EMBEDDED_PORT,
) -> None:
    """Check a grid before running it, exactly as `arb run` does first: each model's API key, the embedded models
    (llama.cpp build, GGUF files, ports), the sandbox if a task runs model-written code, demo-ablation sources,
    every task's data source (pinned hub revision, splits, columns; or the files of a data directory) and every
    Ollama endpoint (answers, has the models, allows the registry's context). One line per problem; exit code 2
    if there is any."""
    from grid.launch import preflight
    from grid.spec import expand, load_grid, stages
    from trainables.record.tracking import default_home
    from trainables.registry import load_registry

    registry = load_registry(models)
    made: set[str] = set()  # grids an earlier stage of the chain makes: their runs are not there yet
    for spec in stages(load_grid(gridfile)):
        made_before = frozenset(made)
        made.add(spec.name)
        if spec.analysis_of is not None:
            continue
        trials = expand(spec, registry)
        on_cluster = bool(os.environ.get("RAY_ADDRESS"))
        preflight(spec, trials, registry, default_home(), _uri(tracking_uri), stream=sys.stderr, on_cluster=on_cluster,
                  embedded_port=embedded_port, made_before=made_before)  # fmt: skip
        if on_cluster:  # each Ollama node answers for itself, through a small Ray task on it
            _check_cluster_nodes(spec, trials, registry)
        tasks = sorted({t.task for t in trials})
        typer.echo(f"grid {spec.name!r}: {len(trials)} trials; models, keys, data ({spec.data}) of "
                   f"{', '.join(tasks)} and endpoints: ok")  # fmt: skip


def _check_cluster_nodes(spec: GridSpec, trials: list, registry: object) -> None:
    import ray

    from grid.launch import check_nodes
    from grid.preflight import Problem, raise_if_any
    from grid.session import connect_ray

    connect_ray(os.environ["RAY_ADDRESS"])
    try:
        lines = check_nodes(trials, registry, spec)  # type: ignore[arg-type]
    finally:
        ray.shutdown()
    raise_if_any([Problem(line, "") for line in lines], sys.stderr)


@app.command()
def resume(
    grid: Annotated[str, typer.Argument(help="Name of a grid that was run before (its MLflow experiment).")],
    tracking_uri: TrackingUri = None,
    models: ModelsFile = None,
    embedded_port: EmbeddedPort = EMBEDDED_PORT,
) -> None:
    """Finish an interrupted grid (and its `then:` grids): the spec is read back from MLflow, only unfinished
    trials run."""
    from grid.launch import stored_spec
    from grid.spec import stages

    spec, registry_path = stored_spec(_uri(tracking_uri, sweep=True), grid)
    _launch(stages(spec), registry_path, tracking_uri, models, embedded_port)


@app.command()
def plan(
    gridfile: Annotated[str, typer.Argument(help="Grid YAML file, or the name of a shipped grid.")],
    models: ModelsFile = None,
    tracking_uri: TrackingUri = None,
    ollama_tags: Annotated[
        bool, typer.Option("--ollama-tags", help="Print only the Ollama tags the grid needs, one per line (to pull).")
    ] = False,
) -> None:
    """Print the trials a grid (and its `then:` grids) expands to, and their count, without running anything; and
    per task the smallest effect its n_eval detects (from earlier runs of the task in the store, if any)."""
    from rich.table import Table

    from analysis import planning
    from grid.spec import expand, load_grid, stages
    from trainables.registry import load_registry

    registry = load_registry(models)
    if ollama_tags:  # what deploy/slurm/arb-node.sh pulls on every node before Ray starts
        used = {m for spec in stages(load_grid(gridfile)) for t in expand(spec, registry) for m in (t.model, t.teacher)}
        tags = {registry.models[m].id for m in used if m and registry.models[m].provider_spec.per_node}
        for tag in sorted(tags):
            typer.echo(tag)
        return
    counts = []
    for spec in stages(load_grid(gridfile)):
        trials = expand(spec, registry)
        counts.append(len(trials))
        if spec.analysis_of is not None:
            typer.echo(f"grid {spec.name} (phase {spec.phase}): no trials; it analyses grid {spec.analysis_of}")
            continue
        table = Table(title=f"grid {spec.name} (phase {spec.phase})")
        cols = ("#", "trial key", "model", "task", "optimizer", "teacher", "demos", "n_labeled", "seed", "output")
        for col in cols:
            table.add_column(col)
        for i, t in enumerate(trials, 1):
            output = "json schema" if t.structured else "text"
            row = (t.key, t.model, t.task, t.optimizer, t.teacher or "(self)", t.demos, t.n_labeled, t.seed, output)
            table.add_row(str(i), *map(str, row))
        _console().print(table)
        typer.echo(f"{spec.name}: {len(trials)} trials")
        measured, routed = planning.measured_discordance(tracking_uri)
        _console().print(planning.power_table(spec.name, spec.tasks, spec.n_eval, spec.stopping, measured))
        cheaper = sum(not registry.get(m).is_api for m in spec.models)
        _console().print(planning.routing_plan(spec.name, spec.tasks, spec.n_eval, spec.margin_pp, cheaper, routed))
    if len(counts) > 1:
        typer.echo(f"{sum(counts)} trials in {len(counts)} grids")


@app.command()
def status(
    grid: Annotated[list[str] | None, typer.Argument(help="Grid names (default: every grid in the store).")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Trials finished / compile_failed / running / errored / pending, per grid, from MLflow; and Ray Tune's last
    saved state of the grid's trials, when its results are on this machine ($ARB_HOME/ray or $ARB_STORAGE_PATH)."""
    from rich.table import Table

    from analysis.runs import grid_status
    from grid.launch import tune_state
    from trainables.record.tracking import default_home

    uri = _uri(tracking_uri)
    frame = grid_status(uri, grid or None)
    if frame.empty:
        typer.echo(f"no grids in {uri}")
        return
    frame["tune"] = [tune_state(default_home(), name) for name in frame["grid"]]
    table = Table(title=f"grids in {uri}")
    for col in frame.columns:
        table.add_column(str(col))
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    _console().print(table)


def _console() -> Console:
    from rich.console import Console

    # Piped output (a log file, `watch`) gets full columns instead of rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else 160)


@app.command()
def ui(
    tracking_uri: TrackingUri = None,
    port: Annotated[int, typer.Option(help="Port for the MLflow UI on 127.0.0.1.")] = 5000,
) -> None:
    """Serve the MLflow UI for the store (Ctrl-C stops it)."""
    from trainables.record.experiments import score_view_lines

    uri = _uri(tracking_uri)
    if uri.startswith("http"):
        typer.echo(
            f"the store is a tracking server: open {uri} in a browser. For the cluster's server (reachable only "
            "inside the cluster): on your machine `ray attach cluster.yaml -p 5000`, then open http://localhost:5000 "
            "and sign in as `admin` with the password from `ray exec cluster.yaml 'grep ADMIN ~/.arb/server.env'`"
        )
        for line in score_view_lines(uri, uri):
            typer.echo(line)
        return
    typer.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port}  (Ctrl-C stops it)")
    for line in score_view_lines(uri, f"http://127.0.0.1:{port}"):
        typer.echo(line)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # MLflow's server jobs (judges and prompt optimization run from the UI) are not used here; they cost seven
    # huey worker processes (~1.2 GB, half a minute of CPU at start). Set it to true to have them.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def report(
    grid: Annotated[list[str] | None, typer.Argument(help="Grid names (default: every grid in the store).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for the Markdown and CSV tables.")] = Path("report"),
    tracking_uri: TrackingUri = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Load every run from the store again (default: done runs are cached).")
    ] = False,
    include_truncated: Annotated[
        bool,
        typer.Option(
            "--include-truncated",
            help="Keep trials whose prompts reached the model's context window in the tables (default: listed apart).",
        ),
    ] = False,
    margin: Margin = MARGIN_DEFAULT,
    reference: Reference = None,
    models: ModelsFile = None,
) -> None:
    """Write the study's tables for the given grids as Markdown and CSV, and print the summary. The routing table
    routes a task to a cheaper model only where it is shown non-inferior (within --margin pp of the reference),
    and writes the decisions as a LiteLLM gateway config (routing.litellm.yaml)."""
    from analysis.report import write_report
    from analysis.runs import ReportCache
    from trainables.record.tracking import default_home
    from trainables.registry import load_registry

    uri = _uri(tracking_uri)
    cache = ReportCache.for_store(uri, default_home())
    if no_cache:
        shutil.rmtree(cache.directory, ignore_errors=True)
    path = write_report(uri, grid or None, out, registry=load_registry(models) if models else None, cache=cache,
                        include_truncated=include_truncated, margin_pp=margin, reference=reference)  # fmt: skip
    typer.echo(path.read_text())
    typer.echo(f"report written to {out.resolve()}")


@app.command()
def route(
    grid: Annotated[list[str], typer.Argument(help="Grid names (their MLflow experiments) whose trials race.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for decisions.csv and routing.litellm.yaml.")] = Path(
        "route"
    ),
    margin: Margin = MARGIN_DEFAULT,
    reference: Reference = None,
    batch: Annotated[int, typer.Option(min=1, help="Test examples per program per round.")] = 25,
    zone: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Indifference zone ε in pp: a candidate shown no better than −margin + ε leaves "
            "the race (it cannot be the pick; routing still needs the full margin shown).",
        ),
    ] = 2.0,
    n_max: Annotated[
        int | None, typer.Option("--n-max", min=1, help="Most test examples per program (default: the split's size).")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(min=0, help="Stop after this many rounds (a budget); `arb route` again continues the race."),
    ] = None,
    tracking_uri: TrackingUri = None,
    models: ModelsFile = None,
    embedded_port: EmbeddedPort = EMBEDDED_PORT,
) -> None:
    """Decide, per task, whether a cheaper model can take it: race the cheaper models' optimized programs against
    the reference on more test examples, round by round, until each is shown non-inferior (within --margin pp) or
    no better than −margin + --zone, or --n-max is reached. Records each race in MLflow, registers the chosen
    program under the alias `routed`, and writes a LiteLLM gateway config. Interrupted, it continues where it
    stopped."""
    from analysis.routing import write_gateway_config
    from grid.route import Settings, decisions_frame, grid_setup, plan_races, registered_name, run_races
    from trainables.record.tracking import default_home

    uri = _uri(tracking_uri, sweep=True)
    setup = grid_setup(grid[0], uri, models)
    registry = setup.registry
    if zone >= margin:
        raise ArbError(f"--zone {zone:g} must be smaller than --margin {margin:g}",
                       "a typical zone is 2 (pp) for a margin of 5")  # fmt: skip
    settings = Settings(margin_pp=margin, batch=batch, n_max=n_max, reference=reference, rounds=rounds,
                        zone_pp=zone)  # fmt: skip
    races = plan_races(uri, grid, registry, settings)
    for r in races:
        have = len(r.scores(r.reference))
        typer.echo(f"{r.task}: {r.reference.name} against {', '.join(c.name for c in r.candidates)}; "
                   f"{have} example(s) already scored, up to {len(r.order)}", err=True)  # fmt: skip
    states = run_races(races, uri, registry, settings, registry_path=setup.registry_path, lm_cache=setup.lm_cache,
                       trial_cpus=setup.trial_cpus, embedded_port=embedded_port, home=default_home())  # fmt: skip
    frame = decisions_frame(races, states)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "decisions.csv", index=False)
    decided = frame[frame["decision"] != "racing"]
    write_gateway_config(decided, registry, out / "routing.litellm.yaml")
    for row in frame.itertuples():
        where = f" (registered {registered_name(grid[0], str(row.task))}@routed)" if row.decision != "racing" else ""
        typer.echo(f"{row.task}: {row.why or 'still racing'}{where}")
    typer.echo(f"decisions: {(out / 'decisions.csv').resolve()}; gateway config: "
               f"{(out / 'routing.litellm.yaml').resolve()}")  # fmt: skip
    if len(decided) < len(frame):
        raise ArbError(f"{len(frame) - len(decided)} task(s) still racing after the round budget",
                       f"`{_me()} route {' '.join(grid)}` continues from the rounds recorded")  # fmt: skip


@app.command(name="export")
def export_(
    grid: Annotated[list[str], typer.Argument(help="Grid names (their MLflow experiments).")],
    out: Annotated[Path | None, typer.Option("--out", help="The archive (default: GRID.arb.tar.gz here).")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write grids' runs, metric histories, artifacts and report tables into one .tar.gz that `arb import` loads
    into any store (a laptop's, after the cluster is gone)."""
    import tempfile

    from analysis.archive import export_grids
    from analysis.report import write_report

    uri = _uri(tracking_uri)
    out = out or Path(f"{grid[0]}.arb.tar.gz")
    with tempfile.TemporaryDirectory(prefix="arb-report-") as tables:
        write_report(uri, grid, Path(tables), log=False)  # exporting reads the store, never writes it
        moved = export_grids(uri, grid, out, report=Path(tables))
    for m in moved:
        typer.echo(f"{m.grid}: {m.runs} runs, {m.artifacts} artifact files")
    typer.echo(f"archive written to {out.resolve()} ({out.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"open it elsewhere: {_me()} import {out.name}, then {_me()} ui / {_me()} report {' '.join(grid)}")


@app.command(name="import")
def import_(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz written by `arb export`.")],
    tracking_uri: TrackingUri = None,
) -> None:
    """Load an `arb export` archive into a store (default: the local one in $ARB_HOME): the grids' runs, with new
    run ids; report, ui, status and resume then work on them."""
    from analysis.archive import import_archive

    uri = _uri(tracking_uri)
    for m in import_archive(archive, uri):
        typer.echo(f"{m.grid}: {m.runs} runs, {m.artifacts} artifact files → {uri}")
    typer.echo(f"browse: {_me()} ui" + ("" if tracking_uri is None else f" --tracking-uri {uri}"))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # MLflow announces schema migrations at INFO on every new store; users need only warnings.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from grid.signals import stop_on_sigterm

    stop_on_sigterm()
    try:
        app()
    except ArbError as exc:
        typer.echo(f"arb: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("arb: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
