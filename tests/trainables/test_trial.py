"""Whole trials over real HTTP against the stub server: Ollama and OpenAI paths, the MLflow record, reuse."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import expected_baseline
from mlflow.tracking import MlflowClient
from stub_server import StubServer, table_responder

from grid.spec import GridSpec, Trial, expand
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial

SPEC_METRICS = {
    "baseline_score", "optimized_score", "delta_pp", "n_demos_chosen", "latency_ms_p50", "latency_ms_p95",
    "prompt_tokens", "completion_tokens", "cost_usd", "optimize_seconds", "eval_seconds", "lm_calls",
}  # fmt: skip
SPEC_PARAMS = {"model", "task", "optimizer", "demos", "n_labeled", "teacher", "seed", "n_eval"}
SPEC_TAGS = {"arb.trial_key", "arb.phase", "arb.grid", "arb.status", "arb.task_version"}


def _trial(model: str, optimizer: str = "mipro", teacher: str | None = None, **params: Any) -> Trial:
    spec = GridSpec(
        name="stubgrid",
        phase="test",
        models=[model],
        tasks=["math"],
        optimizer=optimizer,
        teacher=teacher,
        demos=[2],
        n_labeled=[6],
        n_val=3,
        n_eval=8,
        data="sample",
        optimizer_params=params
        or ({"num_candidates": 2, "num_trials": 2, "minibatch": False} if optimizer == "mipro" else {}),
    )
    return expand(spec, load_registry())[0]


def _config(trial: Trial, uri: str, endpoints: dict[str, str]) -> dict[str, Any]:
    exp = tracking.ensure_experiment(uri, trial.grid)
    return {
        "trial": trial.model_dump(),
        "runtime": {"tracking_uri": uri, "experiment_id": exp, "endpoints": endpoints},
    }


@pytest.mark.parametrize(
    ("model", "path", "route"), [("llama3.2", "", "/api/chat"), ("gpt-4o", "/v1", "/v1/chat/completions")]
)
def test_trial_over_http_scores_and_logs_the_record(
    model: str, path: str, route: str, stub: StubServer, tracking_uri: str, math_splits: Any,
    known_answers: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000")
    trial = _trial(model)
    metrics = execute_trial(_config(trial, tracking_uri, {model: stub.url + path}))

    expected = expected_baseline(math_splits, known_answers)
    assert 62.5 <= expected < 100.0  # 5 of 8 known, plus any whose answer happens to be "0"
    assert metrics["baseline_score"] == pytest.approx(expected)
    # every call reached the stub, for the right model, and was counted
    # The optimized program repeats some of the optimizer's prompts: those are cache hits, counted but not sent.
    sent = metrics["lm_calls"] - metrics["cache_hits"]
    assert stub.state.calls[model] == sent > 2 * 8 and metrics["cache_hits"] > 0
    assert stub.state.paths[route] == sent  # Ollama's native API, or OpenAI's
    assert metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0
    if model == "gpt-4o":
        assert metrics["cost_usd"] == pytest.approx(
            (metrics["prompt_tokens"] * 2.5 + metrics["completion_tokens"] * 10.0) / 1e6
        )

    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name("stubgrid").experiment_id, trial.key)
    assert run.info.run_name == f"{model} · math · mipro · d2 · n6"
    assert set(run.data.tags) >= SPEC_TAGS and run.data.tags["arb.status"] == "finished"
    assert set(run.data.params) >= SPEC_PARAMS and "version.dspy" in run.data.params
    assert set(run.data.metrics) >= SPEC_METRICS
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    # ours, then mlflow.dspy's compile record (the optimizer's best program and its train / val sets)
    assert files == {"program.json", "instruction.txt", "examples.csv", "examples.json", "best_model.json",
                     "trainset.json", "valset.json"}  # fmt: skip
    table = pd.read_csv(io.StringIO(Path(client.download_artifacts(run.info.run_id, "examples.csv")).read_text()))
    assert sorted(table["condition"].unique()) == ["baseline", "optimized"]
    assert len(table) == 16 and table.loc[table.condition == "baseline", "score"].mean() * 100 == pytest.approx(
        expected
    )
    assert "sk-test" not in Path(client.download_artifacts(run.info.run_id, "program.json")).read_text()
    _check_ui_record(client, run, trial, stub, model)


def _check_ui_record(client: MlflowClient, run: Any, trial: Trial, stub: StubServer, model: str) -> None:
    """What the MLflow UI shows for the trial: traces, candidates, table, datasets, model, prompt, description."""
    import mlflow
    import mlflow.dspy

    run_id, exp_id = run.info.run_id, run.info.experiment_id
    # one trace per test example and condition, linked to the run, with the LM spans and their token usage
    traces = mlflow.search_traces(locations=[exp_id], run_id=run_id, return_type="list")
    assert len(traces) == 16
    assert sorted(t.info.tags["arb.condition"] for t in traces) == ["baseline"] * 8 + ["optimized"] * 8
    lm_spans = [sp for t in traces for sp in t.data.spans if sp.span_type in ("CHAT_MODEL", "LLM")]
    assert len(lm_spans) >= 16
    # the baseline's calls went to the model (the optimized program's may all be LM cache hits, without usage)
    assert all(t.info.token_usage["input_tokens"] > 0 for t in traces if t.info.tags["arb.condition"] == "baseline")
    # the optimizer's candidates: child runs with their program and score, and the trajectory on the trial's run
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) >= 2 and all("eval" in c.data.metrics for c in children)
    assert "model.json" in {a.path for a in client.list_artifacts(children[0].info.run_id)}
    keys = {c.info.run_name.rsplit("_", 1)[0] for c in children}  # `eval_full_3`: metric `eval_full`, step 3
    assert sum(len(client.get_metric_history(run_id, key)) for key in keys) == len(children)
    # the per-example table, and train / val / test as dataset inputs
    table = client.load_table(exp_id, "examples.json", run_ids=[run_id])
    assert len(table) == 16 and set(table["condition"]) == {"baseline", "optimized"}
    contexts = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(contexts) == {"train", "val", "test"} and contexts["test"].name == "math-sample-test"
    # the program as a model that loads back with one call and answers, and its instruction as a prompt version
    loaded = mlflow.dspy.load_model(run.data.tags["arb.model_uri"])
    before = stub.state.calls[model]
    answer = loaded(question="What is 2 + 2?")
    assert stub.state.calls[model] == before + 1 and isinstance(answer.answer, str)
    prompt = mlflow.genai.load_prompt(run.data.tags["arb.prompt_uri"])
    instruction = Path(client.download_artifacts(run_id, "instruction.txt")).read_text()
    assert prompt.template == instruction and prompt.name == f"arb.math.{model.replace(':', '-')}"
    assert prompt.name in client.get_run(run_id).data.tags.get("mlflow.linkedPrompts", "")  # listed on the run page
    # a description that tells the result
    note = run.data.tags["mlflow.note.content"]
    assert f"**{model}** on **math**" in note and "paired 95% interval" in note and "Tango score interval" in note
    del trial


def test_finished_trial_is_reused_without_lm_calls(stub: StubServer, tracking_uri: str) -> None:
    trial = _trial("llama3.2", optimizer="none")
    config = _config(trial, tracking_uri, {"llama3.2": stub.url})
    first = execute_trial(config)
    calls = stub.state.calls.total()
    second = execute_trial(config)
    assert stub.state.calls.total() == calls
    assert second["reused"] == 1.0 and second["baseline_score"] == first["baseline_score"]
    client = MlflowClient(tracking_uri)
    assert len(tracking.find_runs(client, client.get_experiment_by_name("stubgrid").experiment_id, trial.key)) == 1


def test_unparseable_output_scores_wrong_and_is_counted(tracking_uri: str) -> None:
    with StubServer(["llama3.2"], lambda model, messages: "I refuse to use your format.") as server:
        metrics = execute_trial(_config(_trial("llama3.2", optimizer="none"), tracking_uri, {"llama3.2": server.url}))
        assert metrics["baseline_score"] == 0.0
        assert metrics["parse_failures_baseline"] == 8
        # ChatAdapter falls back to JSONAdapter once: at most two calls per example
        assert server.state.calls["llama3.2"] <= 2 * 8


def test_pathological_output_is_a_parse_failure_not_a_crash(tracking_uri: str) -> None:
    # Seen from Gemma-3-270M on rag: nesting deep enough that json_repair raises ValueError in DSPy's JSON fallback.
    with StubServer(["llama3.2"], lambda model, messages: "[" * 5000) as server:
        metrics = execute_trial(_config(_trial("llama3.2", optimizer="none"), tracking_uri, {"llama3.2": server.url}))
    assert metrics["baseline_score"] == 0.0 and metrics["parse_failures_baseline"] == 8


def test_failed_compile_keeps_the_baseline(
    stub: StubServer, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainables.optimizers import CompileRequest, get_optimizer

    def explode(req: CompileRequest) -> Any:
        raise RuntimeError("no demo could be bootstrapped")

    monkeypatch.setattr(get_optimizer("bootstrap"), "compile", explode)
    trial = _trial("llama3.2", optimizer="bootstrap")
    metrics = execute_trial(_config(trial, tracking_uri, {"llama3.2": stub.url}))
    assert metrics["optimized_score"] == metrics["baseline_score"] and metrics["delta_pp"] == 0.0
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name("stubgrid").experiment_id, trial.key)
    assert run.data.tags["arb.status"] == "compile_failed"
    assert "no demo could be bootstrapped" in run.data.tags["arb.compile_error"]


def test_dead_server_errors_the_trial_and_a_retry_reuses_its_run(tracking_uri: str, stub: StubServer) -> None:
    trial = _trial("llama3.2", optimizer="none")
    with pytest.raises(Exception, match=r"(?i)connect|transport|refused"):
        execute_trial(_config(trial, tracking_uri, {"llama3.2": "http://127.0.0.1:9"}))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("stubgrid").experiment_id
    [run] = tracking.find_runs(client, exp, trial.key)
    assert run.data.tags["arb.status"] == "errored"
    execute_trial(_config(trial, tracking_uri, {"llama3.2": stub.url}))
    [again] = tracking.find_runs(client, exp, trial.key)
    assert again.info.run_id == run.info.run_id and again.data.tags["arb.status"] == "finished"


@pytest.mark.parametrize("task", ["qa", "analysis"])
def test_text_tasks_run_through_a_trial(task: str, tracking_uri: str) -> None:
    from trainables.tasks import TASKS

    splits = TASKS[task].load("sample", seed=0, n_labeled=4, n_val=2, n_eval=4)
    right = {ex.question: ex.answer for ex in splits.test[:3]}  # the 4th gets "0": wrong for both tasks
    from stub_server import table_responder

    with StubServer(["llama3.2"], table_responder(right)) as server:
        spec = GridSpec(name=f"t-{task}", models=["llama3.2"], tasks=[task], optimizer="bootstrap", demos=[1],
                        n_labeled=[4], n_val=2, n_eval=4, data="sample")  # fmt: skip
        [trial] = expand(spec, load_registry())
        metrics = execute_trial(_config(trial, tracking_uri, {"llama3.2": server.url}))
    assert metrics["baseline_score"] == pytest.approx(75.0)


THINK_CASES = [
    ("<think>hmm</think>\n42", "42", "<think>hmm</think>"),
    ("<THINK>a\nb</THINK>answer", "answer", "<THINK>a\nb</THINK>"),
    ("no thinking here", "no thinking here", ""),
    ("<think>ran out of tokens", "", "<think>ran out of tokens"),  # unclosed: no answer at all
    ("opened in the prompt</think> 7", "7", "opened in the prompt</think>"),
    ("<think>one</think>x<think>two</think>y", "xy", "<think>one</think><think>two</think>"),
    ("", "", ""),
    ("<think></think>", "", "<think></think>"),
]


@pytest.mark.parametrize(("text", "answer", "thinking"), THINK_CASES)
def test_strip_thinking(text: str, answer: str, thinking: str) -> None:
    from trainables.lm.client import strip_thinking

    assert strip_thinking(text) == (answer, thinking)


def test_reasoning_model_think_blocks_are_stripped_and_counted(
    tracking_uri: str, math_splits: Any, known_answers: dict[str, str]
) -> None:
    decoy = "The answer might be 999. Wait, let me reconsider the arithmetic step by step. " * 3
    with StubServer(["qwen3:4b", "llama3.2"], table_responder(known_answers, think=decoy)) as server:
        reasoning = execute_trial(_config(_trial("qwen3:4b", optimizer="none"), tracking_uri, {"qwen3:4b": server.url}))
        plain = execute_trial(_config(_trial("llama3.2", optimizer="none"), tracking_uri, {"llama3.2": server.url}))
    assert reasoning["baseline_score"] == pytest.approx(expected_baseline(math_splits, known_answers))
    assert 0 < reasoning["thinking_tokens"] < reasoning["completion_tokens"]
    assert reasoning["latency_ms_p95"] >= reasoning["latency_ms_p50"] > 0
    # the same output from a model not marked `reasoning` is not touched: no thinking counted
    assert plain["thinking_tokens"] == 0 and plain["completion_tokens"] == reasoning["completion_tokens"]


@pytest.mark.parametrize(("traces", "sample"), [("none", 1.0), ("eval", 0.5)])
def test_trace_settings_choose_what_is_traced(traces: str, sample: float, stub: StubServer, tracking_uri: str) -> None:
    import mlflow

    from trainables.record.tracing import chosen

    trial = _trial("llama3.2").model_copy(update={"traces": traces, "trace_sample": sample})
    metrics = execute_trial(_config(trial, tracking_uri, {"llama3.2": stub.url}))
    assert metrics["baseline_score"] > 0
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, client.get_experiment_by_name("stubgrid").experiment_id, trial.key)
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    if traces == "none":
        assert found == []
        return
    # the same examples are traced in both conditions: the ones `chosen` picks by id
    picked = {f"test-{k}" for k in range(10) if chosen(f"test-{k}", sample)}
    by_condition = {c: {t.info.tags["arb.example_id"] for t in found if t.info.tags["arb.condition"] == c}
                    for c in ("baseline", "optimized")}  # fmt: skip
    assert by_condition["baseline"] == by_condition["optimized"] and 0 < len(by_condition["baseline"]) < 8
    assert by_condition["baseline"] <= picked


def test_a_lost_race_to_create_a_shared_dataset_or_prompt_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from trainables.record import publish

    calls = []

    def loses_once() -> str:
        calls.append(1)
        if len(calls) == 1:  # what MLflow raises when another trial inserted the same dataset first
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
        return "linked"

    assert publish._racing(loses_once) == "linked" and len(calls) == 2
    with pytest.raises(MlflowException, match="no such table"):  # anything else is not retried
        publish._racing(lambda: (_ for _ in ()).throw(MlflowException("no such table: datasets")))


def test_two_trials_registering_one_new_prompt_at_once_both_succeed(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trials of one task and model (seeds 0 and 1) finish together: both look the prompt up, find none, and
    create it. Forced here at a barrier between lookup and creation, three times over."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import mlflow
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    from trainables.record import publish

    mlflow.set_tracking_uri(tracking_uri)
    original = ModelRegistryClient.get_registered_model
    for round_ in range(3):
        barrier = threading.Barrier(2, timeout=20)
        waited: set[int] = set()

        def lookup(self: Any, name: str, *, barrier: threading.Barrier = barrier, waited: set[int] = waited) -> Any:
            try:
                return original(self, name)
            except Exception:
                if threading.get_ident() not in waited:  # the first lookup of each trial: both miss, then create
                    waited.add(threading.get_ident())
                    barrier.wait()
                raise

        monkeypatch.setattr(ModelRegistryClient, "get_registered_model", lookup)
        exp = tracking.ensure_experiment(tracking_uri, f"prompts{round_}")
        client = MlflowClient(tracking_uri)
        runs = [client.create_run(exp).info.run_id for _ in range(2)]

        def register(run_id: str, round_: int = round_) -> str:
            return publish.register_instruction("math", f"racer{round_}", f"Solve it ({run_id}).", run_id=run_id,
                                                message="m", tags={})  # fmt: skip

        with ThreadPoolExecutor(2) as pool:
            uris = sorted(pool.map(register, runs))
        assert uris == [f"prompts:/arb.math.racer{round_}/1", f"prompts:/arb.math.racer{round_}/2"]


def test_two_whole_trials_of_one_model_and_task_started_together_both_finish(
    stub: StubServer, tracking_uri: str
) -> None:
    """Seeds 0 and 1 of one model and task, each in its own process as Ray runs them (the study's 3 seeds make such
    pairs the rule on a cluster): both create the grid's datasets and the task's prompt for the first time. Both
    trials' first prompt lookups meet at a barrier (`tests/pair_trial.py`), so both miss it; twice over, each time
    in a new grid. Every metric the runs hold is declared in the record's schema."""
    import json
    import os
    import subprocess
    import sys

    from trainables.record.schema import Metric

    declared = {v for k, v in vars(Metric).items() if k.isupper()}
    client = MlflowClient(tracking_uri)
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key-000"}
    # the prompt is the task's and model's: a new one each round (the stub serves these two)
    for round_, (model, path) in enumerate([("llama3.2", ""), ("gpt-4o", "/v1")]):
        base = _trial(model, optimizer="bootstrap").model_copy(update={"grid": f"pair{round_}"})
        trials = [base.model_copy(update={"seed": seed}) for seed in (0, 1)]
        barrier = Path(tracking_uri.removeprefix("sqlite:///")).parent / f"barrier{round_}"
        barrier.mkdir()
        procs = []
        for trial in trials:
            config = json.dumps(_config(trial, tracking_uri, {model: stub.url + path}))
            command = [sys.executable, str(Path(__file__).parents[1] / "pair_trial.py"), str(barrier), config]
            procs.append(subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env))
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], [e[-3000:] for e in errors]
        assert len(list(barrier.glob("missed-*"))) == 2  # both trials really missed the prompt at once
        exp = client.get_experiment_by_name(f"pair{round_}").experiment_id
        for trial in trials:
            [run] = tracking.find_runs(client, exp, trial.key)
            assert run.data.tags["arb.status"] == "finished", run.data.tags.get("arb.error")
            assert run.data.tags["arb.prompt_uri"].startswith(f"prompts:/arb.math.{model}/")
            assert set(run.data.metrics) - {"eval"} <= declared, set(run.data.metrics) - declared
        uris = {tracking.find_runs(client, exp, t.key)[0].data.tags["arb.prompt_uri"] for t in trials}
        assert uris == {f"prompts:/arb.math.{model}/1", f"prompts:/arb.math.{model}/2"}
