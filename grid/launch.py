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
from pathlib import Path
from typing import Any

from grid import placement
from grid.embedded import DEFAULT_PORT, EmbeddedServers
from grid.progress import GridOutcome, progress_callback
from grid.session import Session, session
from grid.spec import GridSpec, Trial, expand
from trainables.errors import ArbError
from trainables.lm import slots
from trainables.record import experiments
from trainables.record.tracking import default_home
from trainables.registry import ModelRegistry, load_registry


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
    from grid.reuse import settle
    from trainables.record import tracking

    trials = expand(spec, registry)
    # Trials finished earlier are settled from one query, so that a finished grid starts no Ray, no model server
    # and no trial process, and needs no API key (each trial would find its run too, but only after Ray started).
    done = settle(tracking_uri, spec.name, trials)
    todo = [t for t in trials if t.key not in done]
    used = sorted({t.model for t in todo} | ({spec.teacher} if spec.teacher and todo else set()))
    preflight(spec, todo, registry, home, tracking_uri, stream=stream, on_cluster=bool(os.environ.get("RAY_ADDRESS")),
              embedded_port=embedded_port)  # fmt: skip
    experiment_id = tracking.ensure_experiment(tracking_uri, spec.name)
    _remember_spec(tracking_uri, experiment_id, spec, registry_path, registry)
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
    _tune_quietly()
    with session(used, registry, tracking_uri, home, registry_path=registry_path, experiment_id=experiment_id,
                 embedded_port=embedded_port, stream=stream) as opened:  # fmt: skip
        _fit(spec, todo, registry, opened, home, outcome, stream)
    return outcome


def _tune_quietly() -> None:
    """Tune's console settings for a sweep whose progress callback says what happens."""
    # A failed trial is one line from the progress callback (the traceback is kept with its MLflow run), not
    # Tune's multi-screen traceback on the console.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    # Ray prints a failed task's whole remote traceback when its result is dropped unread ("Unhandled error",
    # ray/_private/worker.py `raise_errors`), which Tune does for a failed trial's last result; and Tune logs
    # "Trials did not complete: [ids]" at the end, which `arb run`'s own summary says with the trials' names.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
    # Tune's own console tables repeat what the progress callback prints; verbose=0 alone does not silence them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # With a custom searcher Tune keeps a single trial pending at a time, so trials would start one by one, each
    # waiting for its worker process; the searcher already hands out only what the slots can take.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "200")


def preflight(
    spec: GridSpec, trials: list[Trial], registry: ModelRegistry, home: Path, tracking_uri: str, *, stream: Any,
    on_cluster: bool, embedded_port: int = DEFAULT_PORT, made_before: frozenset[str] = frozenset(),
) -> None:  # fmt: skip
    """What `arb check` and `arb run` check before any work (`grid.preflight.readiness`): each problem on its own
    line, then `PreflightFailed` (exit code 2)."""
    from grid.preflight import raise_if_any, readiness

    problems = readiness(spec, trials, registry, home, tracking_uri, on_cluster=on_cluster,
                         embedded_port=embedded_port, made_before=made_before)  # fmt: skip
    raise_if_any(problems, stream)


def check_nodes(trials: list[Trial], registry: ModelRegistry, spec: GridSpec) -> list[str]:
    """On a Ray cluster: the Ollama check of `grid.preflight` on every Ollama node, as a small task pinned to each
    (a node reaches its own Ollama on loopback, at the port its `arb-ollama-port` label names)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from grid.preflight import check_ollama, ollama_wants

    lines = unserved_models(trials, registry, ray.nodes())
    wants = ollama_wants(trials, registry, spec)
    if not wants:
        return lines

    @ray.remote(num_cpus=0)
    def on_node(wants: dict[str, int]) -> tuple[str, list[str]]:
        from trainables.providers.ollama import PORT_LABEL

        port = ray.get_runtime_context().get_node_labels().get(PORT_LABEL) or "11434"
        host = f"http://127.0.0.1:{int(str(port))}"
        return ray.util.get_node_ip_address(), check_ollama(host, wants)

    nodes = placement.ollama_nodes(ray.nodes())
    futures = [
        on_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(wants)
        for node_id in nodes
    ]
    for ip, problems in ray.get(futures, timeout=120):
        lines.extend(f"node {ip}: {line}" for line in problems)
    return lines


def unserved_models(trials: list[Trial], registry: ModelRegistry, nodes: list[dict[str, Any]]) -> list[str]:
    """Models served one per node (vLLM) that no live node serves, on a cluster where some node serves one: their
    trials would wait for a node forever."""
    lines = []
    for name in sorted({t.model for t in trials}):
        entry = registry.get(name)
        label = entry.provider_spec.model_label
        served = served_models(nodes, label) if label else set()
        if served and entry.id not in served:
            lines.append(
                f"no node serves {entry.provider} model {entry.id!r} ({name}); nodes serve {sorted(served)} "
                f"(node label {label}): start a node with it (deploy/slurm ARB_VLLM_MODEL, cluster.yaml) or drop it"
            )
    return lines


def _remember_spec(
    tracking_uri: str, experiment_id: str, spec: GridSpec, registry_path: str | None, registry: ModelRegistry
) -> None:  # fmt: skip
    """Store the grid spec on its experiment, so that `arb resume NAME` needs nothing but the tracking store, with
    the registry entries of its models (a model only the user's registry file names is known to later readers)."""
    used = [*spec.models, *([spec.teacher] if spec.teacher else [])]
    models = {name: registry.get(name).model_dump(mode="json", exclude_defaults=True) for name in used}
    experiments.remember(tracking_uri, experiment_id, spec.model_dump_json(), registry_path,
                         experiment_description(spec, experiment_id), json.dumps(models))  # fmt: skip


def experiment_description(spec: GridSpec, experiment_id: str) -> str:
    """The experiment's description in the MLflow UI (`trainables.record.experiments.describe`) for a grid."""
    axes = [
        f"models: {', '.join(spec.models)}",
        f"tasks: {', '.join(spec.tasks)}",
        f"optimizer: {', '.join(spec.optimizer)}" + (f" (teacher {spec.teacher})" if spec.teacher else ""),
        f"demos: {spec.demos}; n_labeled: {spec.n_labeled}; seeds: {spec.seeds}; n_val {spec.n_val}; "
        f"n_eval {spec.n_eval}; data: {spec.data}",
    ]
    words = spec.description.strip() or f"Grid `{spec.name}`."
    return experiments.describe(experiment_id, spec.name, words, f"**{spec.size} trials**, phase {spec.phase}:", axes)


def stored_spec(tracking_uri: str, name: str) -> tuple[GridSpec, str | None]:
    """The spec (and registry path) a grid was last launched with, read back from its experiment."""
    spec_json, registry_path = experiments.stored(tracking_uri, name)
    return GridSpec.model_validate_json(spec_json), registry_path


def _fit(
    spec: GridSpec,
    trials: list[Trial],
    registry: ModelRegistry,
    opened: Session,
    home: Path,
    outcome: GridOutcome,
    stream: Any,
) -> None:
    from ray import tune

    from trainables.trial import run_trial

    runtime, servers, address = opened.runtime, opened.servers, opened.address
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
        tune.with_resources(run_trial, _trial_resources(spec, registry, _ray_nodes(address))),
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
            callbacks=[progress_callback(trials, outcome, stream)],
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


def served_models(nodes: list[dict[str, Any]], label: str) -> set[str]:
    """The model ids that live nodes of `ray.nodes()` say they serve under node label `label` (vLLM's
    `arb-vllm-model`)."""
    return {str(n["Labels"][label]) for n in nodes if n.get("Alive") and label in (n.get("Labels") or {})}


def _trial_resources(spec: GridSpec, registry: ModelRegistry, nodes: list[dict[str, Any]]) -> Any:
    """Per-trial resources: CPUs; for a trial the searcher pinned to an Ollama node, one of its slots there; for a
    model that nodes serve one per server (vLLM), a node whose `model_label` names it."""
    from ray import tune

    def resources(config: dict[str, Any]) -> Any:
        bundle: dict[str, float] = {"CPU": spec.trial_cpus}
        node = config.get("node")
        if node:
            bundle[placement.SLOTS] = 1
            return tune.PlacementGroupFactory([bundle], bundle_label_selector=[{placement.NODE_ID_LABEL: node}])
        entry = registry.get(str(config["trial"]["model"]))
        label = entry.provider_spec.model_label
        if label and entry.id in served_models(nodes, label):
            return tune.PlacementGroupFactory([bundle], bundle_label_selector=[{label: entry.id}])
        return tune.PlacementGroupFactory([bundle])

    return resources


def _ray_nodes(address: str) -> list[dict[str, Any]]:
    import ray

    return [] if address == "local" else ray.nodes()


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


def run_stages(
    specs: list[GridSpec], registry_path: str | None, uri: str, embedded_port: int, *, me: str, own_store: bool
) -> None:
    """Run the grids in order (a grid and its `then:` grids), one summary line each, then where to look; an
    `ArbError` if the last one did not finish. `me`: how the user invokes arb; `own_store`: they named the store."""
    registry = load_registry(registry_path)
    ran: list[str] = []
    outcome: GridOutcome | None = None
    for spec in specs:
        if spec.analysis_of is not None:
            print(f"grid {spec.name} (phase {spec.phase}) runs no trials: it is the analysis of grid "
                  f"{spec.analysis_of}. Read it with: {me} report {spec.analysis_of} --out report/")  # fmt: skip
            continue
        outcome = run_grid(spec, registry, uri, default_home(), registry_path=registry_path,
                           embedded_port=embedded_port)  # fmt: skip
        print(summary_line(outcome), flush=True)
        ran.append(spec.name)
        if outcome.failed or outcome.interrupted:
            break
    if not ran or outcome is None:
        return
    print(f"MLflow store: {uri}")
    ui = f"{me} ui" + (f" --tracking-uri {uri}" if own_store else "")
    print(f"Browse the runs: {ui}  (then open the link it prints for each grid: its runs with their scores)")
    print(f"Tables and dashboard: {me} report {' '.join(ran)} --out report/", flush=True)
    head = specs[0].name
    if outcome.repeated_error is not None:
        raise ArbError(
            f"the sweep stopped after {len(outcome.failed)} trials of grid {ran[-1]} failed, most with the same "
            f"error: {outcome.repeated_error}",
            f"fix that, then `arb resume {head}` runs the trials that did not finish",
        )
    if outcome.failed:
        raise ArbError(
            f"{len(outcome.failed)} of {outcome.total} trials of grid {ran[-1]} errored",
            f"see `arb status`, then `arb resume {head}`",
        )
    if outcome.interrupted:
        raise ArbError("the sweep stopped before every trial ended", f"`arb resume {head}` finishes the rest")
