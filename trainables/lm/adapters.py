"""Structured outputs: DSPy's JSON adapter with the output schema enforced by the model server.

Small models often break DSPy's text field format. With `structured: true` in a grid, a trial answers through
`dspy.JSONAdapter`, and each call carries the JSON schema of the signature's output fields in the dialect of the
server that constrains decoding to it:

- llama.cpp (`llama-server`): `response_format = {"type": "json_object", "schema": …}` (a grammar);
- OpenAI: structured outputs, `{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}`;
- Ollama: the same OpenAI form, which LiteLLM turns into Ollama's `format: <schema>`.

DSPy itself only sends a schema to models its capability table lists, which leaves out every local server.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.adapters.json_adapter import _get_structured_outputs_response_format, _has_open_ended_mapping

from trainables.providers import get_provider


def response_format(provider: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The `response_format` that makes `provider`'s server enforce `schema` (`Provider.response_format`)."""
    return get_provider(provider).response_format(schema)


class StructuredJSONAdapter(dspy.JSONAdapter):
    """`dspy.JSONAdapter` that always sends the output schema, shaped for the LM's provider (see module doc)."""

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        provider = getattr(lm, "arb_provider", None)
        if provider is None or _has_open_ended_mapping(signature):
            super()._prepare_response_format(lm, lm_kwargs, signature)
            return
        schema = _get_structured_outputs_response_format(signature).model_json_schema()
        lm_kwargs["response_format"] = response_format(provider, schema)


def adapter(structured: bool) -> dspy.Adapter | None:
    """The adapter a trial's programs run with: schema-enforced JSON, or None for DSPy's default (ChatAdapter,
    falling back to JSON on a parse error)."""
    return StructuredJSONAdapter() if structured else None
