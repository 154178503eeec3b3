"""Model registry: validation, prices and API keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.errors import ArbError
from trainables.registry import load_registry


def test_shipped_registry_has_the_study_models() -> None:
    reg = load_registry()
    for name in (
        "llama3.2",
        "mistral",
        "phi4",
        "qwen2.5:7b",
        "qwen3:4b",
        "deepseek-r1:7b",
        "gpt-4o",
        "gpt-5.2",
    ):
        reg.get(name)
    assert reg.get("gpt-4o").cost_usd(1_000_000, 1_000_000) == pytest.approx(12.5)
    assert reg.get("llama3.2").cost_usd(10**9, 10**9) == 0.0


def test_gpu_hour_pricing(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("models:\n  big: {provider: ollama, id: big, gpu_hour_usd: 3.6}\n")
    assert load_registry(path).get("big").cost_usd(0, 0, model_seconds=10) == pytest.approx(0.01)


def test_ollama_endpoint_follows_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11434")
    assert load_registry().get("phi4").resolved_endpoint() == "http://10.0.0.5:11434"


def test_missing_api_key_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ArbError, match=r"OPENAI_API_KEY is not set"):
        load_registry().require_keys(["phi4", "gpt-4o"])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("models:\n  x: {provider: carrier-pigeon, id: x}\n", "provider"),
        ("models:\n  x: {provider: ollama, id: x, price: 3}\n", "price"),
        ("models:\n  x: {provider: embedded, id: x}\n", "gguf"),
        ("models:\n  x: {provider: openai, id: x}\n", "api_key_env"),
        ("models:\n  x: {provider: ollama, id: x, input_usd_per_mtok: -1}\n", "input_usd_per_mtok"),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_bad_registry_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ArbError, match=needle):
        load_registry(path)
