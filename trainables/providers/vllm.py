"""vLLM on GPU nodes: its OpenAI-compatible server (`vllm serve MODEL --served-model-name ID`), one model per
server, with continuous batching, so a trial keeps many requests in flight where Ollama takes a few per node.

A node says where its vLLM listens with the Ray node label `arb-vllm-port`, and which model it serves with `arb-
vllm-model` (deploy/slurm with `ARB_ENGINE=vllm`, cluster.yaml's vLLM node type); a trial of that model is placed on
such a node (`grid.launch`). Without the labels the registry's endpoint is used. Before its first call a trial asks
the server (`VLLM.serve`): `GET /health` answers 200 once the engine is up, and `GET /v1/models` lists the served
name with `root` (the weights it was started from) and `max_model_len` (vLLM's `ModelCard`,
vllm/entrypoints/openai/protocol.py). The identity that keys the LM cache is `root` and `max_model_len`: another
checkpoint or window under the same served name gets new cache keys. A prompt longer than `max_model_len` is refused
with a 400 ("This model's maximum context length is N tokens…", vllm-project/vllm#20409, #33425), never cut, which
the trial records as the example's `context_window` error; the registry's `context` is checked against
`max_model_len` up front.

A vLLM-served model is a different registry entry from the same model under Ollama: other weights (the
checkpoint's own BF16 or an AWQ/GPTQ quantization, not a GGUF) and so other scores (docs/registry.md).
"""

from __future__ import annotations

from typing import Any

from trainables.errors import ArbError
from trainables.providers.base import Provider

PORT_LABEL = "arb-vllm-port"
MODEL_LABEL = "arb-vllm-model"


class VLLMUnavailable(ArbError):
    """The node's vLLM cannot serve the model right now; retrying the trial (elsewhere or later) may succeed."""


class VLLM(Provider):
    name = "vllm"
    # LiteLLM's vLLM route: its error mapping knows vLLM's "This model's maximum context length is" 400
    # (litellm_core_utils/exception_mapping_utils.py), which DSPy 3.4's own OpenAI engine reads only from an
    # OpenAI `code: context_length_exceeded` that vLLM does not send: there a long prompt would fail the trial.
    litellm_prefix = "hosted_vllm"
    port_label = PORT_LABEL
    model_label = MODEL_LABEL
    base_env = "VLLM_BASE_URL"
    default_base = "http://127.0.0.1:8000/v1"
    # One trial's share of a server that batches: its `--max-num-seqs` (default 256 in vLLM 0.6+; deploy/slurm
    # starts it with 64) is shared by the trials on the node. At 16 in flight an H100 serving an 8B model gives
    # ~1,400 tok/s against ~120 at 1 (BENCHMARKS.md, "What a grid costs", cites the measurements).
    in_flight = 16

    def client_base(self, base: str | None) -> str | None:
        if not base:
            return base
        base = base.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"

    def lm_options(self, entry: Any) -> dict[str, Any]:
        return {"engine": "litellm"}

    def serve(self, base: str, entry: Any) -> str | None:
        return served_identity(base, entry.id, entry.context)


def served_identity(base: str, model_id: str, context: int, *, timeout_s: float = 10.0) -> str:
    """Check that the vLLM at `base` is up and serves `model_id` with a window of at least `context` tokens; the
    served model's identity (`vllm:<root>:<max_model_len>`)."""
    import httpx

    root = base.rstrip("/").removesuffix("/v1")
    fix = "start vLLM on that node (deploy/slurm with ARB_ENGINE=vllm), or check its `arb-vllm-port` label"
    try:
        health = httpx.get(f"{root}/health", timeout=timeout_s)
        listed = httpx.get(f"{root}/v1/models", timeout=timeout_s) if health.status_code == 200 else None
    except httpx.HTTPError as exc:
        raise VLLMUnavailable(f"vLLM at {root} does not answer: {' '.join(str(exc).split())[:200]}", fix) from None
    if listed is None:
        raise VLLMUnavailable(f"vLLM at {root} is not ready (/health: {health.status_code})", fix)
    try:
        cards = {card["id"]: card for card in listed.json()["data"]}
    except (ValueError, KeyError, TypeError):
        raise VLLMUnavailable(f"{root}/v1/models did not answer as vLLM does", fix) from None
    card = cards.get(model_id)
    if card is None:
        raise VLLMUnavailable(
            f"vLLM at {root} serves {', '.join(sorted(cards)) or 'nothing'}, not {model_id!r}",
            f"start it with `--served-model-name {model_id}`, or set the entry's `id` to the served name",
        )
    window = card.get("max_model_len")
    if isinstance(window, int) and context > window:
        raise ArbError(
            f"vLLM at {root} serves {model_id!r} with max_model_len {window}, below the registry's context {context}",
            f"lower the entry's `context` to {window}, or restart vLLM with `--max-model-len {context}`",
        )
    return f"vllm:{card.get('root') or model_id}:{window}"
