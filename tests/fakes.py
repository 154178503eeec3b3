"""An in-process fake LM for unit tests: a DSPy engine (dspy 3.4's `complete(Request) -> Response` contract, the
one DSPy's own `DummyLM` uses) that answers from a `Responder`, the same function the HTTP stub
(`tests/stub_server.py`) answers with. A trial reaches it through the registry like any model: an entry whose
provider is `inprocess` (registered here) and whose `id` names a responder in `RESPONDERS`. Everything above the
wire (metering, the response cache, adapters, the trial's record) runs as it does against a server.

What it does not model (use the stub server for these): HTTP, streaming, a server's context window and its
truncation, errors and timeouts on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events
from stub_server import Responder, message_tokens

from trainables.providers import PROVIDERS, Provider, register

RESPONDERS: dict[str, Responder] = {}
"""model id → how that model answers."""
CALLS: dict[str, int] = {}
"""model id → requests answered (cache hits never reach the engine)."""


class FakeEngine:
    """Answers every request of one model with its responder; counts tokens as the stub server does."""

    def __init__(self, model: str) -> None:
        self.model = model

    def complete(self, request: Any) -> Response:
        validate_request(request)
        messages: list[dict[str, Any]] = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
        text = RESPONDERS[self.model](self.model, messages)
        CALLS[self.model] = CALLS.get(self.model, 0) + 1
        prompt = sum(message_tokens(m) for m in messages)
        completion = len(text.split())
        usage = Usage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
        return Response(id=None, model=self.model, message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=usage)  # fmt: skip

    def stream(self, request: Any) -> Iterator[Any]:
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        pass


class InProcess(Provider):
    """A provider whose models answer in this process (no server): one module and one `register` line, as any."""

    name = "inprocess"

    def connection(self, base: str | None, key: str, timeout_s: float) -> dict[str, Any]:
        return {}  # a DSPy engine object owns its connection: dspy.LM refuses api_key and timeout beside one

    def lm_options(self, entry: Any) -> dict[str, Any]:
        return {"engine": FakeEngine(entry.id)}


if InProcess.name not in PROVIDERS:
    register(InProcess())
