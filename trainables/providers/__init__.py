"""The model providers a registry may name, one module each, registered here by name (a toy one in a test shows
adding one). Imported by the registry, the LM client, the driver and the analysis; imports nothing of the project
but its error type.
"""

from __future__ import annotations

from trainables.providers.base import Provider
from trainables.providers.embedded import Embedded
from trainables.providers.ollama import Ollama
from trainables.providers.openai import OpenAI
from trainables.providers.vllm import VLLM

__all__ = ["PROVIDERS", "Provider", "get_provider", "register"]

PROVIDERS: dict[str, Provider] = {}
"""Every provider a registry entry may name, by that name."""


def register(provider: Provider) -> Provider:
    """Make `provider` known to registry files by its `name` (a second one of the same name is an error)."""
    if provider.name in PROVIDERS:
        raise ValueError(f"provider {provider.name!r} is registered twice")
    PROVIDERS[provider.name] = provider
    return provider


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}: use one of {', '.join(PROVIDERS)}") from None


register(Ollama())
register(OpenAI())
register(Embedded())
register(VLLM())
