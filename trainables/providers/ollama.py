"""Ollama on each GPU node: models pulled there, reached through LiteLLM's native `/api/chat` route.

On a cluster every GPU node runs its own Ollama; a trial must use the one on its own node, not a fixed address.
A node says where its Ollama listens with the Ray node label `arb-ollama-port` (cluster.yaml sets it; several
simulated nodes on one machine use different ports). Without the label, the registry's endpoint (or OLLAMA_HOST)
is used, as on a single machine. The trial checks that server before its first call (`Ollama.serve`).
"""

from __future__ import annotations

import os
from typing import Any

from trainables.errors import ArbError
from trainables.providers.base import Provider

PORT_LABEL = "arb-ollama-port"


class OllamaUnavailable(ArbError):
    """The node's Ollama cannot serve the model right now; retrying the trial (elsewhere or later) may succeed."""


class Ollama(Provider):
    name = "ollama"
    litellm_prefix = "ollama_chat"
    per_node = True
    port_label = PORT_LABEL
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

    def serve(self, base: str, entry: Any) -> str | None:
        return ensure_model(base, entry.id)


def ensure_model(host: str, model_id: str, *, pull: bool | None = None, timeout_s: float = 10.0) -> str:
    """Check that the Ollama at `host` answers and has `model_id`, pulling it if allowed (ARB_OLLAMA_PULL=1);
    returns the model's digest (its version: a re-pulled model under the same name gets a new one)."""
    import httpx
    import ollama

    if pull is None:
        pull = os.environ.get("ARB_OLLAMA_PULL", "0") == "1"
    client = ollama.Client(host=host, timeout=timeout_s)
    try:
        digests = {m.model: str(m.digest or "") for m in client.list().models if m.model}
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
        raise OllamaUnavailable(
            f"Ollama at {host} does not answer: {' '.join(str(exc).split())[:200]}",
            "start Ollama on that node (ollama serve), or check its `arb-ollama-port` label / OLLAMA_HOST",
        ) from None
    names = set(digests)
    for name in (model_id, f"{model_id}:latest"):
        if name in digests:
            return digests[name]
    if not pull:
        raise OllamaUnavailable(
            f"Ollama at {host} does not have model {model_id!r} (it has: {', '.join(sorted(names)) or 'none'})",
            f"run `ollama pull {model_id}` on the node, or set ARB_OLLAMA_PULL=1 to let trials pull it",
        )
    try:
        client.pull(model_id)
        pulled = {m.model: str(m.digest or "") for m in client.list().models if m.model}
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
        raise OllamaUnavailable(
            f"pulling {model_id!r} on {host} failed: {exc}", "check the node's disk and network"
        ) from None
    return pulled.get(model_id) or pulled.get(f"{model_id}:latest") or ""
