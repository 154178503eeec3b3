"""`arb route` end to end against the stub LM server: trials of a grid, then races that add test examples where
the routing decision is open, recorded in MLflow, registered under an alias, resumable without a repeated call.

The data are GSM8K-shaped JSONL files written here (300 test questions), and the stub answers each model from a
planted pattern, so every decision is known by construction: `llama3.2` answers exactly as the reference
`gpt-4o` does (non-inferior), `mistral` gets most of them wrong (worse than any margin), and `qwen2.5:7b` misses
exactly 1 in 20 of the reference's right answers (a gap of −5 pp: on the margin, undecidable).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from stub_server import StubServer, chat_adapter_reply, requested_output_fields

from grid.cli import app
from grid.launch import _remember_spec
from grid.route import ROUTED_ALIAS, registered_name
from grid.spec import GridSpec, expand
from trainables.errors import ArbError
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

N_TEST = 300
RIGHT_PER_100 = {"gpt-4o": 80, "llama3.2": 80, "mistral": 20, "qwen2.5:7b": 80}
"""Out of each 100 questions (by a hash of the question), how many a model answers right; the same questions
for everyone up to its share, so a weaker model's right answers are a subset of the reference's."""


def _bucket(question: str) -> int:
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % 100


def _qwen_misses(question: str) -> bool:
    """qwen2.5:7b misses 1 in 20 of the questions the reference gets right: 4 of its 80 buckets."""
    return _bucket(question) in (3, 23, 43, 63)


def _question(i: int) -> tuple[str, int]:
    a, b = 3 + (i * 7) % 50, 5 + (i * 11) % 40
    return f"Item {i}: a crate holds {a} apples and another holds {b}. How many apples are there in all?", a + b


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """GSM8K's schema (question, answer ending in `#### N`) with 300 test and 30 train questions."""
    root = tmp_path / "data" / "gsm8k"
    root.mkdir(parents=True)
    for split, n, offset in (("test", N_TEST, 0), ("train", 30, 10_000)):
        rows = [_question(offset + i) for i in range(n)]
        (root / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": f"{q.split(':')[0]}: {s}\n#### {s}"}) + "\n" for q, s in rows)
        )
    return tmp_path / "data"


class Planted:
    """The stub's answers, and every (model, question) it was asked, to show no call is repeated."""

    def __init__(self) -> None:
        self.asked: Counter[tuple[str, str]] = Counter()

    def __call__(self, model: str, messages: list[dict[str, Any]]) -> str:
        last = str(messages[-1].get("content", "")) if messages else ""
        found = re.search(r"(Item \d+: .*?in all\?)", last)
        answer = "0"
        if found:
            question = found.group(1)
            self.asked[(model, question)] += 1
            a, b = map(int, re.findall(r"holds (\d+)", question))
            right = _bucket(question) < RIGHT_PER_100[model] and not (model == "qwen2.5:7b" and _qwen_misses(question))
            answer = str(a + b) if right else "0"
        fields = requested_output_fields(messages) or ["answer"]
        return chat_adapter_reply({f: (answer if f == "answer" else "adding") for f in fields})


def _grid(name: str, models: list[str], data: Path) -> GridSpec:
    return GridSpec(name=name, phase="test", models=models, tasks=["math"], optimizer="bootstrap", demos=[1],
                    n_labeled=[4], n_val=2, n_eval=25, data=str(data), lm_cache=False)  # fmt: skip


def _run_trials(spec: GridSpec, uri: str, stub: StubServer) -> None:
    exp = tracking.ensure_experiment(uri, spec.name)
    _remember_spec(uri, exp, spec, None, load_registry())
    for trial in expand(spec, load_registry()):
        path = "/v1" if trial.model == "gpt-4o" else ""
        runtime = {"tracking_uri": uri, "experiment_id": exp, "endpoints": {trial.model: stub.url + path}}
        execute_trial({"trial": trial.model_dump(), "runtime": runtime})


def _route(*args: str) -> Any:
    from typer.testing import CliRunner

    return CliRunner().invoke(app, ["route", *args])


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[StubServer, Planted]]:
    planted = Planted()
    with StubServer(["gpt-4o", "llama3.2", "mistral", "qwen2.5:7b"], planted) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.url + "/v1")
        monkeypatch.setenv("OLLAMA_HOST", stub.url)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.chdir(tmp_path)
        yield stub, planted


def test_route_chooses_the_planted_good_model_eliminates_the_bad_one_and_resumes_without_repeating(
    env: Any, data_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    stub, planted = env
    _run_trials(_grid("racegrid", ["gpt-4o", "llama3.2", "mistral"], data_dir), tracking_uri, stub)
    before = Counter(planted.asked)

    # one round, then stop: what a killed race leaves (its rounds recorded)
    first = _route("racegrid", "--tracking-uri", tracking_uri, "--rounds", "1", "--out", str(tmp_path / "r1"))
    assert isinstance(first.exception, ArbError) and "still racing" in str(first.exception), first.output
    client = MlflowClient(tracking_uri)
    (race_run,) = tracking.search_all(client, client.get_experiment_by_name("racegrid").experiment_id,
                                      "tags.`arb.kind` = 'race'")  # fmt: skip
    assert race_run.data.tags["arb.race_rounds"] == "1"

    done = _route("racegrid", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "r2"))
    assert done.exit_code == 0, done.output
    assert "math: route to llama3.2" in done.output

    # no (model, question) was asked twice during the two races (the trials asked their own 25 before)
    during = planted.asked - before
    assert during and max(during.values()) == 1
    assert not any((m, q) in before for (m, q) in during if m in ("gpt-4o", "llama3.2"))  # trials' examples reused

    run = client.get_run(race_run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["arb.race_decision"] == "route"
    assert run.data.tags["arb.route_to"] == "llama3.2"
    # mistral was shown worse at the first look, on the trials' 25 examples, and never scored again
    assert run.data.metrics["n.mistral"] == 25 and not any(m == "mistral" for m, _ in during)
    history = client.get_metric_history(run.info.run_id, "ci_low.llama3.2")
    assert len(history) >= 3 and history[-1].value > -5.0  # an interval per round, the last above −δ
    assert run.data.metrics["n.llama3.2"] < N_TEST  # decided before the split ran out

    version = client.get_model_version_by_alias(registered_name("racegrid", "math"), ROUTED_ALIAS)
    trial_runs = {r.data.tags["arb.trial_key"]: r for r in tracking.search_all(client, run.info.experiment_id)
                  if "arb.trial_key" in r.data.tags}  # fmt: skip
    llama_run = next(r for r in trial_runs.values() if r.data.params["model"] == "llama3.2")
    assert version.run_id == llama_run.info.run_id and version.tags["arb.model"] == "llama3.2"

    gateway = yaml.safe_load((tmp_path / "r2" / "routing.litellm.yaml").read_text())
    assert gateway["model_list"][0]["model_name"] == "arb/math"
    assert gateway["model_list"][0]["litellm_params"]["model"] == "ollama_chat/llama3.2"
    decisions = pd.read_csv(tmp_path / "r2" / "decisions.csv")
    assert decisions.loc[0, "decision"] == "route" and decisions.loc[0, "route_to"] == "llama3.2"
    # the race is not a trial: status and the report count only the grid's 3 trials
    from analysis.runs import load_runs

    assert len(load_runs(tracking_uri, ["racegrid"])) == 3


def test_a_null_race_runs_to_n_max_and_says_undecided(
    env: Any, data_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    stub, _ = env
    _run_trials(_grid("nullgrid", ["gpt-4o", "qwen2.5:7b"], data_dir), tracking_uri, stub)
    result = _route("nullgrid", "--tracking-uri", tracking_uri, "--n-max", "125", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "math: undecided at n = 125: keep gpt-4o for now" in result.output
    client = MlflowClient(tracking_uri)
    version = client.get_model_version_by_alias(registered_name("nullgrid", "math"), ROUTED_ALIAS)
    assert version.tags["arb.model"] == "gpt-4o" and version.tags["arb.decision"] == "undecided"
