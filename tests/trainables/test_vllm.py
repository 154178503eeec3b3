"""`provider: vllm`: whole trials against a stub that behaves like vLLM's OpenAI-compatible server (the stub's
flavor "vllm"): the trial checks /health and /v1/models first, sends its requests in flight at once, keys its cached
answers on the served weights, and a prompt over `max_model_len` is a refused example, not a cut one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import expected_baseline
from stub_server import StubServer, table_responder

from grid.spec import GridSpec, expand
from trainables.errors import ArbError
from trainables.providers.vllm import served_identity
from trainables.record import tracking
from trainables.registry import load_registry
from trainables.trial import execute_trial


def _config(tmp_path: Path, uri: str, url: str, grid: str, **entry: Any) -> dict[str, Any]:
    path = tmp_path / "vllm-models.yaml"
    fields = {"provider": "vllm", "id": "served-llama", "endpoint": url, "context": 4096, "max_tokens": 256, **entry}
    path.write_text(yaml.safe_dump({"models": {"llama-vllm": fields}}))
    registry = load_registry(path)
    spec = GridSpec(name=grid, phase="test", models=["llama-vllm"], tasks=["math"], optimizer="bootstrap",
                    demos=[2], n_labeled=[6], n_val=3, n_eval=8, data="sample")  # fmt: skip
    [trial] = expand(spec, registry)
    runtime = {"tracking_uri": uri, "experiment_id": tracking.ensure_experiment(uri, grid),
               "registry": registry.model_dump(mode="json")}  # fmt: skip
    return {"trial": trial.model_dump(), "runtime": runtime}


def test_a_vllm_trial_runs_whole_and_its_cache_follows_the_served_weights(
    tmp_path: Path, tracking_uri: str, math_splits: Any, known_answers: dict[str, str]
) -> None:
    with StubServer(["served-llama"], table_responder(known_answers), flavor="vllm") as stub:  # type: ignore[arg-type]
        first = execute_trial(_config(tmp_path, tracking_uri, stub.url + "/v1", "vllm-a"))
        sent = stub.state.calls["served-llama"]
        assert stub.state.gets["/health"] >= 1 and stub.state.gets["/v1/models"] >= 1  # checked (student, teacher)
        assert first["baseline_score"] == pytest.approx(expected_baseline(math_splits, known_answers))
        assert sent > 8 and stub.state.paths["/v1/chat/completions"] == sent
        assert first["eval_in_flight"] > 1  # the provider's 16 in flight: 8 examples at once
        # the same weights in a new grid: every answer comes from the cache
        execute_trial(_config(tmp_path, tracking_uri, stub.url + "/v1", "vllm-b"))
        assert stub.state.calls["served-llama"] == sent
        # the server restarted on another checkpoint under the same name: new keys, every call sent again
        stub.state.roots["served-llama"] = "/models/llama-3.1-8b-awq"
        execute_trial(_config(tmp_path, tracking_uri, stub.url + "/v1", "vllm-c"))
        assert stub.state.calls["served-llama"] == 2 * sent


def test_a_prompt_over_max_model_len_is_refused_and_recorded(tmp_path: Path, tracking_uri: str) -> None:
    """vLLM refuses prompt + max_tokens over its window with a 400: the examples count as context errors (the
    report sets the trial apart), and nothing was cut silently."""
    with StubServer(["served-llama"], flavor="vllm", v1_ctx=300) as stub:  # type: ignore[arg-type]
        config = _config(tmp_path, tracking_uri, stub.url, "vllm-long", context=300, max_tokens=256)
        config["trial"]["optimizer"] = "none"
        metrics = execute_trial(config)
    # every example of both conditions (the optimized one is the unchanged program, relabelled)
    assert metrics["context_errors"] == 16 and metrics["n_evaluated"] == 8 and metrics["baseline_score"] == 0


def test_the_trial_says_what_is_wrong_with_the_vllm_server(tmp_path: Path) -> None:
    with StubServer(["other-model"], flavor="vllm", v1_ctx=2048) as stub:  # type: ignore[arg-type]
        with pytest.raises(ArbError, match="serves other-model, not 'served-llama'") as wrong:
            served_identity(stub.url, "served-llama", 2048)
        assert "--served-model-name served-llama" in str(wrong.value.fix)
        with pytest.raises(ArbError, match="max_model_len 2048, below the registry's context 8192"):
            served_identity(stub.url + "/v1", "other-model", 8192)
        stub.state.ready = False
        with pytest.raises(ArbError, match="not ready"):
            served_identity(stub.url, "other-model", 2048)
    with pytest.raises(ArbError, match="does not answer"):
        served_identity("http://127.0.0.1:9", "served-llama", 2048, timeout_s=2)


def test_a_trial_on_a_vllm_node_calls_that_nodes_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside Ray, a node labelled `arb-vllm-port` (deploy/slurm's vLLM nodes) is where the trial's vLLM is; a node
    without the label, or no Ray at all, leaves the registry's endpoint."""
    import ray

    from trainables.providers import get_provider
    from trainables.registry import ModelEntry

    entry = ModelEntry(provider="vllm", id="served-llama", endpoint="http://10.0.0.5:8000/v1")
    vllm = get_provider("vllm")
    assert vllm.node_endpoint(entry) == "http://10.0.0.5:8000/v1"  # not in Ray

    class Context:
        def __init__(self, labels: dict[str, str]) -> None:
            self.labels = labels

        def get_node_labels(self) -> dict[str, str]:
            return self.labels

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context({"arb-vllm-port": "18123"}))
    assert vllm.client_base(vllm.node_endpoint(entry)) == "http://127.0.0.1:18123/v1"
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context({"arb-ollama-port": "11434"}))
    assert vllm.node_endpoint(entry) == "http://10.0.0.5:8000/v1"  # an Ollama node's label is not vLLM's
