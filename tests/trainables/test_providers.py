"""Providers are descriptions, registered by name: adding an API provider is one class and one `register` line,
and everything that asks "is this an API model", "which key", "which LiteLLM route" asks the description."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from synthetic import _row, binary, paired_examples

from analysis.routing import gateway_config, routing_advice
from analysis.runs import mark_api, typed_runs
from trainables.errors import ArbError
from trainables.lm.client import build_lm
from trainables.providers import PROVIDERS, Provider, register
from trainables.registry import ModelEntry, ModelRegistry, load_registry


class ToyCloud(Provider):
    """A second API provider: an OpenAI-compatible endpoint of another vendor, priced per token."""

    name = "toycloud"
    api = True
    needs_key = True
    base_env = "TOYCLOUD_BASE_URL"
    default_base = "https://api.toycloud.example/v1"


@pytest.fixture
def toycloud() -> Iterator[None]:
    register(ToyCloud())  # the one registration line
    yield
    PROVIDERS.pop("toycloud")


def _registry() -> ModelRegistry:
    shipped = load_registry().models
    toy = ModelEntry(provider="toycloud", id="toy-large", api_key_env="TOYCLOUD_KEY", input_usd_per_mtok=3.0)
    return ModelRegistry(models={**shipped, "toy-large": toy})


def test_an_unknown_provider_is_a_registry_error_that_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown provider 'toycloud': use one of ollama, openai, embedded"):
        ModelEntry(provider="toycloud", id="x")


def test_a_registered_api_provider_is_an_api_model_everywhere(toycloud: None, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _registry()
    entry = registry.get("toy-large")
    assert entry.is_api and entry.resolved_endpoint() == "https://api.toycloud.example/v1"
    with pytest.raises(ValueError, match="toycloud models need `api_key_env`"):
        ModelEntry(provider="toycloud", id="no-key")
    monkeypatch.delenv("TOYCLOUD_KEY", raising=False)
    with pytest.raises(ArbError, match=r"needs an API key but \$TOYCLOUD_KEY is not set"):
        registry.require_keys(["toy-large"])
    monkeypatch.setenv("TOYCLOUD_KEY", "sk-toy")
    lm = build_lm(entry, meter="toy", role="student")
    assert lm.model == "openai/toy-large" and lm.kwargs["api_base"] == "https://api.toycloud.example/v1"
    assert lm.kwargs["api_key"] == "sk-toy" and "api_key" not in lm.plain_args

    # the analysis: its runs are the API reference a cheaper local model is routed away from
    rows = [_row("a", "toy-large", "math", 50.0, 80.0), _row("b", "llama3.2", "math", 50.0, 80.0)]
    runs = mark_api(typed_runs(rows), registry)
    assert runs.set_index("model")["api"].to_dict() == {"toy-large": True, "llama3.2": False}
    examples = pd.concat([paired_examples("a", binary(300, 150), binary(300, 240)),
                          paired_examples("b", binary(300, 150), binary(300, 240))])  # fmt: skip
    advice = routing_advice(runs, examples, registry)
    row = advice.set_index("task").loc["math"]
    assert row["reference"] == "toy-large" and row["route_to"] == "llama3.2"
    kept = advice.assign(route_to="toy-large")
    (gateway,) = gateway_config(kept, registry)["model_list"]  # type: ignore[misc]
    assert gateway["litellm_params"] == {"model": "openai/toy-large", "api_base": "https://api.toycloud.example/v1",
                                         "api_key": "os.environ/TOYCLOUD_KEY"}  # fmt: skip


def test_no_decision_outside_the_descriptions_compares_a_provider_name() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = subprocess.run(["grep", "-rn", "--include=*.py", "provider ==", "grid", "trainables", "analysis"],
                           cwd=root, capture_output=True, text=True).stdout  # fmt: skip
    assert found == ""
