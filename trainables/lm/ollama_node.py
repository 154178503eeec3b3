"""The Ollama server a trial talks to: the one on the node it runs on, checked before the first LM call.

On a cluster every GPU node runs its own Ollama; a trial must use the one on its own node, not a fixed address.
A node says where its Ollama listens with the Ray node label `arb-ollama-port` (cluster.yaml sets it; several
simulated nodes on one machine use different ports). Without the label, the registry's endpoint (or OLLAMA_HOST)
is used, as on a single machine.
"""

from __future__ import annotations

import os

import httpx
import ollama

from trainables.errors import ArbError
from trainables.registry import ModelEntry

PORT_LABEL = "arb-ollama-port"


class OllamaUnavailable(ArbError):
    """The node's Ollama cannot serve the model right now; retrying the trial (elsewhere or later) may succeed."""


def node_endpoint(entry: ModelEntry) -> str | None:
    """This node's Ollama base URL from its Ray label, else the registry's (None: not inside a Ray worker)."""
    try:
        import ray

        if ray.is_initialized():
            port = ray.get_runtime_context().get_node_labels().get(PORT_LABEL)
            if port:
                return f"http://127.0.0.1:{int(str(port))}"
    except (ImportError, ValueError):
        pass
    return entry.resolved_endpoint()


def ensure_model(host: str, model_id: str, *, pull: bool | None = None, timeout_s: float = 10.0) -> str:
    """Check that the Ollama at `host` answers and has `model_id`, pulling it if allowed (ARB_OLLAMA_PULL=1);
    returns the model's digest (its version: a re-pulled model under the same name gets a new one)."""
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
