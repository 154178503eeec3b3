"""llama.cpp servers (`llama-server`) that `arb` starts itself from GGUF files (`grid.embedded`): the default with
no GPU and no network."""

from __future__ import annotations

from typing import Any

from trainables.providers.base import Provider


class Embedded(Provider):
    name = "embedded"
    started_here = True
    # The server gets one slot per request in flight (grid.embedded). On a 2-core CPU one is fastest: the smoke
    # took 13:42 at 1, 15:23 at 4 (BENCHMARKS.md "Embedded requests in flight"): its calls are mostly prompt, which
    # batching does not speed up on a CPU, and each extra slot keeps its own prompt cache, so shared prefixes are
    # computed again. Decode-heavy calls and more cores gain from slots: set `max_in_flight` there.
    in_flight = 1

    def check_entry(self, entry: Any) -> None:
        if (entry.gguf is None) == (entry.split_gguf is None):
            raise ValueError(
                "embedded models need exactly one of `gguf` or `split_gguf` (where the model file comes from)"
            )

    def lm_options(self, entry: Any) -> dict[str, Any]:
        # DSPy's native engine sends `max_completion_tokens`. llama-server takes it as an alias of `n_predict`
        # (tools/server/server-schema.cpp), but older llama.cpp servers and llama-cpp-python's ignore it, and a
        # model that never emits a stop token then generates until its context is full: `max_tokens` too.
        return {"extra_body": {"max_tokens": entry.max_tokens}}

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        # llama-server constrains decoding with a grammar built from `schema` (tools/server/server-common.cpp reads
        # `response_format.schema` of a "json_object")
        return {"type": "json_object", "schema": schema}
