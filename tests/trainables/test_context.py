"""Context windows as Ollama really serves them: every request says its `num_ctx`, one per model, and a prompt
that still does not fit is counted, tagged and kept out of the report instead of being scored as if whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from mlflow.tracking import MlflowClient
from stub_server import StubServer, fit_context, message_tokens, table_responder

from analysis.report import write_report
from grid.spec import GridSpec, expand
from trainables.lm.client import ContextCheck, Endpoint
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial


def _msg(role: str, words: int) -> dict[str, str]:
    return {"role": role, "content": " ".join(["word"] * words)}


def test_the_stub_drops_the_oldest_non_system_messages_like_ollama() -> None:
    system, demo1, demo2, last = _msg("system", 20), _msg("user", 50), _msg("assistant", 50), _msg("user", 30)
    kept, tokens = fit_context([system, demo1, demo2, last], 150)
    assert [m is x for m, x in zip(kept, [system, demo2, last], strict=True)] == [True, True, True]
    assert tokens == sum(message_tokens(m) for m in (system, demo2, last))
    kept, tokens = fit_context([system, last], 20)  # the latest message alone overflows: cut to the window
    assert kept == [system, last] and tokens == 20


def test_the_stub_serves_like_ollama() -> None:
    with StubServer(["llama3.2"], default_ctx=64, max_ctx=2048) as stub:
        client = ollama.Client(host=stub.url)
        long = [_msg("system", 10), _msg("user", 40), _msg("assistant", 40), _msg("user", 10)]
        # streamed unless the request says otherwise; the default context cuts silently
        chunks = list(client.chat("llama3.2", messages=long, stream=True))
        assert len(chunks) > 1 and chunks[-1].done and stub.state.streamed == 1
        assert chunks[-1].prompt_eval_count <= 64 and stub.state.truncated["llama3.2"] == 1
        # a request with room for all of it: nothing cut, and the new num_ctx reloads the model
        whole = client.chat("llama3.2", messages=long, stream=False, options={"num_ctx": 512})
        assert whole.prompt_eval_count == sum(message_tokens(m) for m in long)
        assert stub.state.loads["llama3.2"] == 2 and stub.state.num_ctx_seen["llama3.2"] == {64, 512}
        client.chat("llama3.2", messages=long, stream=False, options={"num_ctx": 512})
        assert stub.state.loads["llama3.2"] == 2  # same window: no reload
        info = client.show("llama3.2").modelinfo or {}
        assert info["stub.context_length"] == 2048
        response = httpx.post(f"{stub.url}/api/chat", json={"model": "nope", "messages": []})
        assert response.status_code == 404 and "not found, try pulling it first" in response.json()["error"]


@pytest.mark.parametrize(
    ("reported", "size_words", "truncated"),
    [
        (250, 180, False),  # fits with room to spare
        (1000, 180, True),  # filled the window (1000 - margin)
        (600, 1200, True),  # counted at half of what its size predicts: demos were dropped
        (1150, 1200, True),  # near the window and short: the runner cut it
    ],
)
def test_the_context_check(reported: int, size_words: int, truncated: bool) -> None:
    check = ContextCheck(window=1000)
    for n in (20, 30, 400):  # calibration: prompts that cannot have lost a message (nothing droppable)
        assert not check.truncated([_msg("system", 5), _msg("user", n)], n + 13)
    assert check.ratio == pytest.approx(min((n + 13) / (5 * n - 1 + 24) for n in (20, 30, 400)))
    few_shot = [_msg("system", 5), _msg("user", size_words // 2), _msg("assistant", 5), _msg("user", size_words // 2)]
    assert check.truncated(few_shot, min(reported, 1000)) is truncated


def _trial(context: int) -> tuple[Any, dict[str, Any]]:
    registry = load_registry().model_dump()
    registry["models"]["llama3.2"]["context"] = context
    spec = GridSpec(
        name=f"ctx{context}", phase="test", models=["llama3.2"], tasks=["math"], optimizer="bootstrap",
        demos=[4], n_labeled=[6], n_val=2, n_eval=6, data="sample", lm_cache=False,
    )  # fmt: skip
    return expand(spec, load_registry())[0], registry


@pytest.mark.parametrize("context", [8192, 250])
def test_a_few_shot_sweep_beyond_the_servers_default(
    context: int, tracking_uri: str, known_answers: dict[str, str], tmp_path: Path
) -> None:
    """The stub's default window (160 tokens) is shorter than the four-demo prompts. With the registry's 8192 every
    request says so and nothing is cut; with 250 the server cuts the optimized prompts, and every cut call is
    counted (the client's count equals what the server did), tagged, described and kept out of the report."""
    trial, registry = _trial(context)
    with StubServer(["llama3.2"], table_responder(known_answers), default_ctx=160) as stub:
        exp = tracking.ensure_experiment(tracking_uri, trial.grid)
        runtime = {"tracking_uri": tracking_uri, "experiment_id": exp, "endpoints": {"llama3.2": stub.url},
                   "registry": registry}  # fmt: skip
        metrics = execute_trial({"trial": trial.model_dump(), "runtime": runtime})
    assert stub.state.num_ctx_seen["llama3.2"] == {context}  # one value for the whole trial
    assert stub.state.loads["llama3.2"] == 1
    assert metrics["n_demos_chosen"] == 4
    # the trial, not its evaluation runs
    [run] = MlflowClient(tracking_uri).search_runs([exp], filter_string="tags.`arb.trial_key` != ''")
    cut = stub.state.truncated["llama3.2"]
    assert metrics["truncated_calls"] == cut
    if context == 8192:
        assert cut == 0 and run.data.tags["arb.truncated"] == "false"
        return
    assert cut > 0 and metrics["truncated_calls_optimized"] > 0
    assert metrics["truncated_calls_baseline"] == 0  # zero-shot prompts (about 150 tokens) fit
    assert run.data.tags["arb.truncated"] == "true"
    assert "Context window reached" in run.data.tags["mlflow.note.content"]
    MlflowClient(tracking_uri).set_experiment_tag(exp, "arb.grid_spec", "{}")  # what `arb run` marks a grid with
    apart = write_report(tracking_uri, [trial.grid], tmp_path / "r", log=False).read_text()
    assert "1 trial(s) had calls" in apart and "left out of the tables" in apart
    assert "| math" not in apart.split("reached their context window")[1].split("## 1.")[1]  # tables: no run
    kept = write_report(tracking_uri, [trial.grid], tmp_path / "r2", log=False, include_truncated=True).read_text()
    assert "included in the tables" in kept


def test_a_prompt_refused_for_its_length_is_reported_once_not_retried(math_splits: Any) -> None:
    """llama.cpp's server (and OpenAI) refuse a prompt longer than the context with a 400: each example is recorded
    as a context error after one request (no retry, no second adapter), and counted."""
    from trainables.evaluate import evaluate
    from trainables.lm.client import build_lm, new_meter
    from trainables.tasks import get_task

    task = get_task("math")
    entry = load_registry().get("smollm2")
    with StubServer([entry.id], table_responder({}), v1_ctx=40) as stub:
        new_meter("refused")
        lm = build_lm(entry, meter="refused", role="student", at=Endpoint(f"{stub.url}/v1"))
        lm.cache = False
        result = evaluate(task.program(math_splits), math_splits.test[:3], task, lm=lm, condition="baseline")
    assert [r.error for r in result.records] == ["context_window"] * 3
    assert result.context_errors == 3 and stub.state.calls[entry.id] == 3


def test_the_preflight_refuses_a_context_above_the_models_maximum() -> None:
    from grid.preflight import check_ollama

    with StubServer(["llama3.2"], max_ctx=4096) as stub:
        assert check_ollama(stub.url, {"llama3.2": 4096}) == []
        (line,) = check_ollama(stub.url, {"llama3.2": 8192})
        assert "maximum context of 4096" in line and "context: 4096" in line
        (missing,) = check_ollama(stub.url, {"phi4": 4096}, pull=False)
        assert "does not have model 'phi4'" in missing and "ollama pull phi4" in missing
        assert check_ollama(stub.url, {"phi4": 4096}, pull=True) == []  # trials may pull it themselves
        assert stub.state.calls.total() == 0  # no chat request
