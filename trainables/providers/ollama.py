"""Ollama on each GPU node: models pulled there, reached through LiteLLM's native `/api/chat` route."""

from __future__ import annotations

from typing import Any

from trainables.providers.base import Provider


class Ollama(Provider):
    name = "ollama"
    litellm_prefix = "ollama_chat"
    per_node = True
    base_env = "OLLAMA_HOST"
    default_base = "http://127.0.0.1:11434"

    def resolve_base(self, endpoint: str | None) -> str | None:
        # OLLAMA_HOST may be a bare host:port, as the ollama CLI accepts it
        base = super().resolve_base(endpoint)
        return base if base is None or base.startswith("http") else f"http://{base}"

    def client_base(self, base: str | None) -> str | None:
        return base.rstrip("/").removesuffix("/v1") if base else base

    def lm_options(self, entry: Any) -> dict[str, Any]:
        # Ollama's native /api/chat through LiteLLM: it maps max_tokens to num_predict, which Ollama honours, and
        # passes num_ctx into `options`. Every request carries the registry's context: without it Ollama serves
        # its own default (OLLAMA_CONTEXT_LENGTH; unset, 2048-4096 before v0.15.5, sized from GPU memory since, up
        # to 262,144 tokens) and silently drops few-shot demos that do not fit, or reserves KV memory it never uses;
        # one value per model for the whole sweep, because another value reloads the model.
        return {"engine": "litellm", "num_ctx": entry.context}
