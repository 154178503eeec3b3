"""What a model provider is to the project: how its LM is reached and built, whether its models are priced API
models, and what the driver must check or start for it. One module per provider in this folder, registered by
name in `trainables.providers`; the registry, the trial, the driver and the analysis ask the description,
never the provider's name. No DSPy here: the registry imports this when a grid is only being planned; servers'
own clients (ollama, httpx) are imported where a check needs them."""

from __future__ import annotations

import os
from typing import Any, ClassVar


class Provider:
    """A named provider. Subclasses set the class attributes and override what differs from the defaults."""

    name: ClassVar[str]
    litellm_prefix: ClassVar[str] = "openai"
    """The `prefix/model` LiteLLM routes on; an OpenAI-compatible server by default."""
    api: ClassVar[bool] = False
    """Its models run on someone else's servers, paid per token: what the routing question tries to replace."""
    needs_key: ClassVar[bool] = False
    """A registry entry must name `api_key_env`, and a run fails before any trial if that variable is unset."""
    per_node: ClassVar[bool] = False
    """Served by a server on each Ray node (Ollama): its models are pulled there, trials pinned to those nodes, and
    a trial checks its node's server before any work."""
    started_here: ClassVar[bool] = False
    """`arb` itself starts its server from a model file (`grid.embedded`): the entry names the file."""
    knows_context: ClassVar[bool] = True
    """The registry's `context` is the window the server serves (so prompts can be checked against it)."""
    in_flight: ClassVar[int] = 1
    """Requests a trial keeps in flight to one of its models unless the entry says (`max_in_flight`): what its
    server can take from one trial. Evaluation sends that many examples at once and the optimizers run that many
    threads. A per-node server's share is the driver's to give instead (`grid.placement`: the node's slots)."""
    retries: ClassVar[int] = 2
    """Attempts after a failed call (429, 5xx, timeout, dropped connection) unless the entry says (`retries`);
    DSPy makes them, waiting 1, 2, 4 … 60 s or what a 429's `Retry-After` asks (`dspy/clients/execution.py`)."""
    base_env: ClassVar[str | None] = None
    """An environment variable that overrides `default_base`, as the provider's own tools read it."""
    default_base: ClassVar[str | None] = None

    port_label: ClassVar[str | None] = None
    """A Ray node label that says on which port this node's own server listens (several simulated nodes on one
    machine use different ports); a trial on that node talks to it rather than to the registry's endpoint."""
    model_label: ClassVar[str | None] = None
    """A Ray node label naming the one model this node's server serves (vLLM: one model per server). On a cluster
    where some node carries it, a trial of that model runs only on a node whose label names the entry's `id`."""

    def node_endpoint(self, entry: Any) -> str | None:
        """The base URL a trial running here calls: this node's server (its `port_label`), else the entry's."""
        if self.port_label:
            try:
                import ray

                if ray.is_initialized():
                    port = ray.get_runtime_context().get_node_labels().get(self.port_label)
                    if port:
                        return f"http://127.0.0.1:{int(str(port))}"
            except (ImportError, ValueError):
                pass
        return entry.resolved_endpoint()

    def serve(self, base: str, entry: Any) -> str | None:
        """Make sure the server at `base` answers and serves `entry` before a trial's first call (raise
        `trainables.errors.ArbError` with the fix if not); the served model's identity, which keys the LM cache's
        answers (None: the entry's name and endpoint do)."""
        return None

    def resolve_base(self, endpoint: str | None) -> str | None:
        """The base URL to call: the registry's, else the environment's, else the provider's default."""
        if endpoint:
            return endpoint
        if self.base_env and os.environ.get(self.base_env):
            return os.environ[self.base_env]
        return self.default_base

    def check_entry(self, entry: Any) -> None:
        """Raise `ValueError` for fields an entry of this provider must (not) have; `entry` is a `ModelEntry`."""
        if entry.gguf or entry.split_gguf:
            raise ValueError("`gguf` and `split_gguf` are only for embedded models")
        if self.needs_key and not entry.api_key_env:
            raise ValueError(f"{self.name} models need `api_key_env` (the variable that holds the key)")

    def client_base(self, base: str | None) -> str | None:
        """The base URL as the LM client wants it."""
        return base

    def connection(self, base: str | None, key: str, timeout_s: float) -> dict[str, Any]:
        """How the LM client reaches the server: base URL, key, per-call timeout (`dspy.LM` arguments)."""
        return {"api_base": base, "api_key": key, "timeout": timeout_s}

    def lm_options(self, entry: Any) -> dict[str, Any]:
        """Extra `dspy.LM` arguments for an entry of this provider."""
        return {}

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The `response_format` that makes this provider's server enforce a JSON `schema` (structured outputs):
        OpenAI's structured outputs form by default (LiteLLM turns it into Ollama's `format: <schema>`)."""
        return {"type": "json_schema", "json_schema": {"name": "outputs", "schema": schema, "strict": True}}
