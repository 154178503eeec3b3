"""Launching a grid on Ray Tune: one trial per grid point, results in MLflow, progress on the console.

`run_grid` is what `arb run` and `arb resume` call. Exactly-once does not rely on Tune's experiment state:
each trial first looks up its key in MLflow and returns the stored result if the run is finished, so running
a grid again (which is what resume does) only does the work that is not done yet.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid import placement
from grid.embedded import DEFAULT_PORT, EmbeddedServers, check_embedded, serve_embedded
from grid.signals import stop_on_sigterm
from grid.spec import GridSpec, Trial, expand
from trainables import ablation
from trainables.errors import ArbError
from trainables.lm import slots
from trainables.registry import ModelRegistry
from trainables.tasks import sandbox

SPEC_TAG = "arb.grid_spec"
PRELOAD = ("trainables.trial",)
"""Modules a local Ray worker imports before it is handed a trial (what `run_trial` needs). Cluster nodes also
preload `datasets` (cluster.yaml), which a trial's data step would otherwise import itself (1.3 s and 134 MB,
BENCHMARKS.md "Data step at full size"); on one 2-core machine the extra import at every worker start cost more
than it saved (a local Ray test grid: 49 s with it, 42 s without)."""
REGISTRY_TAG = "arb.registry_path"


@dataclass
class GridOutcome:
    """How a launch ended, trial by trial (by trial key)."""

    total: int
    statuses: dict[str, str] = field(default_factory=dict)
    reused: int = 0
    interrupted: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    """Why each errored trial failed (one line), by trial key."""
    repeated_error: str | None = None
    """Set when most ended trials failed with the same error: the sweep stops rather than spend the rest on it."""

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "errored"]

    def note_error(self, key: str, line: str) -> bool:
        """Record a failed trial; True the first time the sweep should stop because the same error (up to names
        and numbers, `error_signature`) ended at least `REPEATS_TO_STOP` trials and most of those that ended."""
        self.errors[key] = line
        if self.repeated_error is not None:
            return False
        counts: dict[str, int] = {}
        for error in self.errors.values():
            counts[error_signature(error)] = counts.get(error_signature(error), 0) + 1
        n = max(counts.values())
        if n >= REPEATS_TO_STOP and 2 * n > len(self.statuses):
            self.repeated_error = line
            return True
        return False


REPEATS_TO_STOP = 3
"""Failures with one error after which a sweep that mostly fails stops (the first trials of a sweep say it all)."""


def error_signature(line: str) -> str:
    """An error line with what varies between trials (quoted names, paths, numbers, run ids) taken out, so that
    "cannot load 'google/boolq'" and "cannot load 'openai/gsm8k'" count as the same failure."""
    import re

    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line.split(" (MLflow run")[0])
    return re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?|/[\w./-]+", "#", line)


def _progress_callback(trials: list[Trial], outcome: GridOutcome, stream: Any) -> Any:
    from ray.tune import Callback

    names = {t.key: t.run_name for t in trials}
    grid = trials[0].grid if trials else "GRID"

    class Progress(Callback):
        """One line per trial as it ends: status, baseline → optimized, time."""

        def __init__(self) -> None:
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.started[trial.trial_id] = time.monotonic()
            key = Trial.model_validate(trial.config["trial"]).key
            print(f"  ▶ start    {names.get(key, key)}", file=stream, flush=True)

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
            key = Trial.model_validate(trial.config["trial"]).key
            outcome.statuses[key] = "compile_failed" if result.get("compile_failed") else "finished"
            outcome.reused += int(result.get("reused", 0))
            done = len(outcome.statuses)
            took = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
            how = "compile_failed (baseline kept)" if result.get("compile_failed") else "finished"
            how = f"reused {how}" if result.get("reused") else how
            print(
                f"  ✔ [{done}/{outcome.total}] {how} {names.get(key, key)}: "
                f"baseline {result.get('baseline_score', float('nan')):.1f} → optimized "
                f"{result.get('optimized_score', float('nan')):.1f} ({result.get('delta_pp', 0):+.1f} pp), "
                f"{int(result.get('lm_calls', 0))} LM calls, {took:.0f} s",
                file=stream,
                flush=True,
            )

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            key = Trial.model_validate(trial.config["trial"]).key
            outcome.statuses[key] = "errored"
            line = _error_line(trial)
            print(
                f"  ✘ [{len(outcome.statuses)}/{outcome.total}] errored  {names.get(key, key)}: {line}",
                file=stream,
                flush=True,
            )
            if outcome.note_error(key, line):
                same = sum(error_signature(e) == error_signature(line) for e in outcome.errors.values())
                print(
                    f"  ■ stopping the sweep: {same} of the {len(outcome.statuses)} trials that ended failed with "
                    f"the same error; the other trials would too. Fix it, then `arb resume {grid}`.",
                    file=stream,
                    flush=True,
                )

    return Progress()


def _error_line(trial: Any) -> str:
    """Why a Tune trial failed, in one line: the trainable's own summary (class, message, MLflow run) when it
    raised one, else the class and first line of whatever Ray reports (e.g. the worker process died). Ray may not
    have written its error file yet when it tells the callbacks, so the trial's MLflow run (which the trial tagged
    with its error before raising) is asked next."""
    from trainables.trial import TrialFailed

    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # an unreadable error file must not stop the sweep
        error = None
    if isinstance(error, str) and error.strip():  # Tune's text trace: its last line names the exception
        return error.strip().splitlines()[-1][:300]
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, TrialFailed):
        return str(cause)
    if cause is not None and not isinstance(cause, str):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return f"{type(cause).__name__}: {first[:300]}"
    return _recorded_error(trial.config) or "the trial process ended without an error message (see `arb status`)"


def _recorded_error(config: dict[str, Any]) -> str | None:
    """The error a trial recorded in its MLflow run (`arb.error_class`, `arb.error`), if it got that far."""
    from mlflow.tracking import MlflowClient

    from trainables.record import tracking

    try:
        runtime, key = config["runtime"], Trial.model_validate(config["trial"]).key
        runs = tracking.find_runs(MlflowClient(runtime["tracking_uri"]), runtime["experiment_id"], key)
    except Exception:  # the store is unreachable, or the config is not a trial's: nothing more to say
        return None
    for run in runs:
        message = run.data.tags.get("arb.error")
        if message:
            return f"{run.data.tags.get('arb.error_class', 'Error')}: {' '.join(message.split())[:300]}"
    return None


def run_grid(
    spec: GridSpec,
    registry: ModelRegistry,
    tracking_uri: str,
    home: Path,
    *,
    registry_path: str | None = None,
    embedded_port: int = DEFAULT_PORT,
    stream: Any = sys.stderr,
) -> GridOutcome:
    """Expand, check, and run every trial of `spec`; returns how each trial ended."""
    from trainables.record import tracking

    trials = expand(spec, registry)
    # Trials finished earlier are settled from one query, so that a finished grid starts no Ray, no model server
    # and no trial process, and needs no API key (each trial would find its run too, but only after Ray started).
    done = tracking.finished_statuses(tracking_uri, spec.name)
    todo = [t for t in trials if t.key not in done]
    used = sorted({t.model for t in todo} | ({spec.teacher} if spec.teacher and todo else set()))
    registry.require_keys(used)
    check_embedded(used, registry, embedded_port)
    if any(t.task == "code" for t in todo):
        sandbox.check(spec.sandbox)
    ablation.check_sources(tracking_uri, todo)
    preflight(spec, todo, registry, home, stream=stream, on_cluster=bool(os.environ.get("RAY_ADDRESS")))
    experiment_id = tracking.ensure_experiment(tracking_uri, spec.name)
    _remember_spec(tracking_uri, experiment_id, spec, registry_path)
    outcome = GridOutcome(total=len(trials))
    for trial in trials:
        if trial.key in done:
            outcome.statuses[trial.key] = done[trial.key]
            outcome.reused += 1

    print(
        f"grid {spec.name!r}: {len(trials)} trials → MLflow experiment {spec.name!r} at {tracking_uri}",
        file=stream,
    )
    if outcome.reused:
        print(f"  {outcome.reused} of {len(trials)} trials already finished in MLflow: reused", file=stream)
    if not todo:
        return outcome
    with serve_embedded(used, registry, home / "logs", base_port=embedded_port, stream=stream) as servers:
        for name, url in servers.endpoints.items():
            speed = servers.speeds[name]
            print(
                f"embedded model {name} at {url}: {speed.prompt_tok_s:.0f} prompt tok/s, "
                f"{speed.generate_tok_s:.1f} generated tok/s, per-call timeout {servers.timeouts[name]:.0f} s",
                file=stream,
                flush=True,
            )
        _fit(spec, todo, tracking_uri, experiment_id, registry, registry_path, servers, home, outcome, stream)
    if servers.failure is not None:
        raise servers.failure
    return outcome


def preflight(
    spec: GridSpec, trials: list[Trial], registry: ModelRegistry, home: Path, *, stream: Any, on_cluster: bool
) -> None:
    """`grid.preflight`'s checks for these trials: each problem on its own line, then `PreflightFailed`."""
    from grid.preflight import raise_if_any, run_checks

    raise_if_any(run_checks(spec, trials, registry, home / "cache", on_cluster=on_cluster), stream)


def check_nodes(trials: list[Trial], registry: ModelRegistry, spec: GridSpec) -> list[str]:
    """On a Ray cluster: the Ollama check of `grid.preflight` on every Ollama node, as a small task pinned to each
    (a node reaches its own Ollama on loopback, at the port its `arb-ollama-port` label names)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from grid.preflight import check_ollama, ollama_wants

    wants = ollama_wants(trials, registry, spec)
    if not wants:
        return []

    @ray.remote(num_cpus=0)
    def on_node(wants: dict[str, int]) -> tuple[str, list[str]]:
        from trainables.lm.ollama_node import PORT_LABEL

        port = ray.get_runtime_context().get_node_labels().get(PORT_LABEL) or "11434"
        host = f"http://127.0.0.1:{int(str(port))}"
        return ray.util.get_node_ip_address(), check_ollama(host, wants)

    nodes = placement.ollama_nodes(ray.nodes())
    futures = [
        on_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(wants)
        for node_id in nodes
    ]
    lines: list[str] = []
    for ip, problems in ray.get(futures, timeout=120):
        lines.extend(f"node {ip}: {line}" for line in problems)
    return lines


def _remember_spec(tracking_uri: str, experiment_id: str, spec: GridSpec, registry_path: str | None) -> None:
    """Store the grid spec on its experiment, so that `arb resume NAME` needs nothing but the tracking store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.set_experiment_tag(experiment_id, SPEC_TAG, spec.model_dump_json())
    client.set_experiment_tag(experiment_id, REGISTRY_TAG, registry_path or "")
    client.set_experiment_tag(experiment_id, "mlflow.note.content", experiment_description(spec, experiment_id))
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{SCORES_VIEW}", json.dumps(SCORES_VIEW_STATE))


def ensure_scores_view(client: Any, experiment: Any) -> None:
    """Give a grid's experiment the scores view if it was launched before the view existed."""
    if f"mlflow.sharedViewState.{SCORES_VIEW}" not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id, f"mlflow.sharedViewState.{SCORES_VIEW}", json.dumps(SCORES_VIEW_STATE)
        )


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


def scores_view_url(ui: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow UI at `ui`, with the scores as columns."""
    return f"{ui.rstrip('/')}/{scores_view_link(experiment_id)}"


def scores_view_link(experiment_id: str) -> str:
    """`scores_view_url` relative to the page it is on (a link in a description)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={SCORES_VIEW}"


def experiment_description(spec: GridSpec, experiment_id: str) -> str:
    """The experiment's description in the MLflow UI: a link to the scores view first (the UI shows the first line
    on top of every page of the experiment, and MLflow 3.17 opens an experiment on the Overview or the Runs page by
    the workflow chosen in the UI, never on a saved view), then the grid's own words, its axes, and how to act."""
    axes = [
        f"models: {', '.join(spec.models)}",
        f"tasks: {', '.join(spec.tasks)}",
        f"optimizer: {', '.join(spec.optimizer)}" + (f" (teacher {spec.teacher})" if spec.teacher else ""),
        f"demos: {spec.demos}; n_labeled: {spec.n_labeled}; seeds: {spec.seeds}; n_val {spec.n_val}; "
        f"n_eval {spec.n_eval}; data: {spec.data}",
    ]
    scores = (
        f"**[Scores of every trial]({scores_view_link(experiment_id)})**: the runs table with the scores as columns."
    )
    lines = [scores, "", spec.description.strip() or f"Grid `{spec.name}`.", "",
             f"**{spec.size} trials**, phase {spec.phase}:"]  # fmt: skip
    lines += [f"- {axis}" for axis in axes]
    lines += [
        "",
        "Each run is one trial: `baseline_score`, `optimized_score` and `delta_pp` are its result; its description, "
        "Traces tab, `examples.json` table and child runs (the optimizer's candidates) tell the rest. Each condition "
        "of a trial (baseline, optimized) is also an evaluation run (Evaluation runs page), which holds its traces "
        "with the gold answers and scores as assessments; select two and *Compare* to see them example by example.",
        f"`arb resume {spec.name}` finishes unfinished trials; `arb report {spec.name}` writes the study's tables.",
    ]
    return "\n".join(lines)


def stored_spec(tracking_uri: str, name: str) -> tuple[GridSpec, str | None]:
    """The spec (and registry path) a grid was last launched with, read back from its experiment."""
    from mlflow.tracking import MlflowClient

    from trainables.record.tracking import ensure_experiment

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None or SPEC_TAG not in exp.tags:
        ensure_experiment(tracking_uri, "Default")  # a store that cannot be reached fails here, with its own message
        raise ArbError(
            f"no grid named {name!r} has been run in {tracking_uri}",
            "check `arb status`, or `arb run GRIDFILE`",
        )
    return GridSpec.model_validate_json(exp.tags[SPEC_TAG]), exp.tags.get(REGISTRY_TAG) or None


def _fit(
    spec: GridSpec,
    trials: list[Trial],
    tracking_uri: str,
    experiment_id: str,
    registry: ModelRegistry,
    registry_path: str | None,
    servers: EmbeddedServers,
    home: Path,
    outcome: GridOutcome,
    stream: Any,
) -> None:
    import ray
    from ray import tune

    from trainables.trial import Runtime, run_trial

    runtime = Runtime(
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        registry_path=registry_path,
        registry=registry.model_dump(),
        endpoints=servers.endpoints,
        timeouts=servers.timeouts,
        versions=servers.versions,
    )
    # A failed trial is one line from the progress callback (the traceback is kept with its MLflow run), not
    # Tune's multi-screen traceback on the console.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    # Tune's own console tables repeat what the progress callback prints; verbose=0 alone does not silence them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # With a custom searcher Tune keeps a single trial pending at a time, so trials would start one by one, each
    # waiting for its worker process; the searcher already hands out only what the slots can take.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "200")
    # Workers inherit the driver's environment; nothing secret is put in the config itself.
    address = os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # Tune runs each trial in its own working directory: a relative ARB_HOME (the default `./arb-results`)
        # would put the node's LM cache and optimizer state in there, fresh for every trial and lost on retry.
        # Cluster nodes set their own ARB_HOME (cluster.yaml).
        os.environ["ARB_HOME"] = str(Path(home).resolve())
    connect_ray(
        # Without RAY_ADDRESS, a fresh local instance: ray.init() alone would try to join whatever cluster
        # /tmp/ray/ray_current_cluster last named, even a dead one. On a cluster head, set RAY_ADDRESS=auto.
        address,
        configure_logging=True,
        logging_level=logging.ERROR,
        # A local instance starts its worker processes with the trial's imports done (DSPy, LiteLLM, MLflow: seconds
        # each) while the driver is still setting up; cluster nodes get the same from RAY_preload_python_modules
        # in cluster.yaml.
        _system_config={"preload_python_modules": list(PRELOAD)} if address == "local" else None,
    )
    try:
        if address != "local":
            from grid.preflight import Problem, raise_if_any

            raise_if_any([Problem(line, "") for line in check_nodes(trials, registry, spec)], stream)
        board = slots.start_board()
        searcher = _searcher(trials, runtime.model_dump(), registry, publish=lambda grants: board.set.remote(grants))
        if searcher.nodes:  # on a cluster: what the sweep found (a local run says nothing new here)
            slots_total = sum(n.slots for n in searcher.nodes.values())
            print(
                f"ray: connected ({address}); {len(trials)} trials on {len(searcher.nodes)} Ollama node(s), "
                f"{slots_total} slot(s)",
                file=stream,
                flush=True,
            )
        tuner = tune.Tuner(
            tune.with_resources(run_trial, _trial_resources(spec)),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=placement.DeadNodeScheduler(searcher),
                # Each trial is handed out at most twice (the searcher's own retry, on any live node).
                num_samples=placement.MAX_ATTEMPTS * len(trials),
                max_concurrent_trials=spec.max_concurrent_trials,
                # A warm worker process keeps DSPy and the task imported: seconds saved on every trial.
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=storage_path(home),
                verbose=0,
                callbacks=[_progress_callback(trials, outcome, stream)],
                stop=_sweep_stopper(servers, outcome),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        results = tuner.fit()
        for i in range(len(results)):
            result = results[i]
            if result.error is not None and result.config:
                key = Trial.model_validate(result.config["trial"]).key
                outcome.statuses.setdefault(key, "errored")  # a retry that finished has already said so
        outcome.interrupted = len(outcome.statuses) < outcome.total
    finally:
        ray.shutdown()


def connect_ray(address: str, **options: Any) -> None:
    """`ray.init` for the driver; a cluster that refuses this client (Ray token authentication: no token, or not
    the cluster's) or does not answer is one error line that says where the token lives, not a traceback."""
    import ray
    from ray.exceptions import AuthenticationError

    token_fix = (
        "a cluster started by cluster.yaml, deploy/slurm or deploy/kuberay requires Ray's token: set "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file (on the cluster.yaml head: "
        "`set -a; . ~/.arb/cluster/ray.env; set +a`), or RAY_AUTH_TOKEN to the token itself"
    )
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **options)
        stop_on_sigterm()
    except AuthenticationError:
        problem = f"the Ray cluster at {address} requires a token and this client has none"
        raise ArbError(problem, token_fix) from None
    except ConnectionError as exc:
        if address == "local":
            raise
        # Ray says only "Failed to connect" both when the cluster is down and when it refused the token.
        problem = f"could not connect to the Ray cluster at {address} ({exc}): it is not running, or it refused this "
        raise ArbError(problem + "client's token", f"check `ray status` on the head; {token_fix}") from None


def trial_dirname(trial: Any) -> str:
    """A Tune trial's folder: model, task and trial key (Tune's default spells out the whole config, hundreds of
    characters), plus Tune's id, since a retried trial is a second Tune trial of the same key."""
    import re

    spec = Trial.model_validate(trial.config["trial"])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{spec.model}-{spec.task}-{spec.key[:10]}")
    return f"{name}-{trial.trial_id}"


def _sweep_stopper(servers: EmbeddedServers, outcome: GridOutcome) -> Any:
    from ray.tune import Stopper

    class SweepStopper(Stopper):
        """Stops the whole sweep (Tune stops the running trials; the rest stay pending for `arb resume`) once an
        embedded server has died twice, or once most trials failed with the same error: every further trial
        would fail the same way."""

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return servers.failure is not None or outcome.repeated_error is not None

    return SweepStopper()


def _searcher(
    trials: list[Trial], runtime: dict[str, Any], registry: ModelRegistry, publish: Any
) -> placement.ModelAwareSearcher:
    """The model-aware searcher over the cluster's Ollama nodes (none on a single machine: nothing is pinned);
    `publish` receives the slots it lends to running trials."""
    import ray

    def live_nodes() -> dict[str, placement.Node]:
        return placement.ollama_nodes(ray.nodes())

    pinned = {t.model for t in trials if registry.get(t.model).provider_spec.per_node}
    return placement.ModelAwareSearcher(
        trials, runtime, pinned=pinned, nodes=live_nodes(), refresh=live_nodes, publish=publish
    )


def _trial_resources(spec: GridSpec) -> Any:
    """Per-trial resources: CPUs, and for a trial the searcher pinned to an Ollama node, one of its slots there."""
    from ray import tune

    def resources(config: dict[str, Any]) -> Any:
        bundle: dict[str, float] = {"CPU": spec.trial_cpus}
        node = config.get("node")
        if not node:
            return tune.PlacementGroupFactory([bundle])
        bundle[placement.SLOTS] = 1
        return tune.PlacementGroupFactory([bundle], bundle_label_selector=[{placement.NODE_ID_LABEL: node}])

    return resources


def storage_path(home: Path) -> str:
    """Where Ray Tune keeps trial state: `ARB_STORAGE_PATH` (on a multi-node cluster, a path every node shares:
    NFS, or an object store URI such as s3://bucket/arb), else `<ARB_HOME>/ray`."""
    return os.environ.get("ARB_STORAGE_PATH") or str(home / "ray")


def tune_state(home: Path, name: str) -> str:
    """Ray Tune's last saved view of grid `name` ("5 terminated, 1 running"), or "-" if it has none here.

    It is Tune's bookkeeping, not the record: a killed driver leaves its trials RUNNING there, and a retried
    trial appears once per attempt. MLflow's counts are what resume goes by.
    """
    from collections import Counter

    path = f"{storage_path(home).rstrip('/')}/{name}"
    if "://" not in path and not list(Path(path).glob("experiment_state-*.json")):
        return "-"
    from ray.tune import ExperimentAnalysis

    try:
        counts = Counter(str(t.status) for t in ExperimentAnalysis(path).trials)
    except (OSError, ValueError, RuntimeError) as exc:
        return f"unreadable ({type(exc).__name__})"
    return ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())) or "-"


def summary_line(outcome: GridOutcome) -> str:
    counts = {s: sum(v == s for v in outcome.statuses.values()) for s in ("finished", "compile_failed", "errored")}
    return json.dumps({"trials": outcome.total, **counts, "reused": outcome.reused})
