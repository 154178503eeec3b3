"""Language models for a trial: a `dspy.LM` per registry entry, metered so every call is accounted for.

Calls are counted by stage (baseline, optimize, optimized) and by role (student, teacher), so the MLflow record
can say what the evaluation cost and what the optimizer cost. DSPy copies LMs freely during optimization, so
the meter is found by name in a module-level table rather than held as an attribute that a copy would clone.
"""

from __future__ import annotations

import contextvars
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dspy

from trainables.errors import ArbError
from trainables.lm import cache as lm_cache
from trainables.registry import ModelEntry

_METERS: dict[str, Meter] = {}
_METERS_LOCK = threading.Lock()


@dataclass
class Usage:
    """Totals for a set of LM calls. Cache hits are calls too, but cost nothing and report no tokens."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0
    """The share of `completion_tokens` spent inside `<think>` blocks (estimated; see `strip_thinking`)."""
    truncated_calls: int = 0
    """Calls whose prompt reached the model's context window (see `ContextCheck`): the server may have cut it."""

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.thinking_tokens += other.thinking_tokens
        self.truncated_calls += other.truncated_calls


_EXAMPLE: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("arb_example_usage", default=None)


@contextmanager
def example_usage() -> Iterator[Usage]:
    """Usage of the LM calls made inside this block, in this context only: per-example accounting that stays right
    when several examples are evaluated at once in threads (each runs in its own copy of the context)."""
    usage = Usage()
    token = _EXAMPLE.set(usage)
    try:
        yield usage
    finally:
        _EXAMPLE.reset(token)


CONTEXT_MARGIN = 16
"""Tokens short of the window at which a prompt counts as having filled it."""
TEMPLATE_TOKENS = 12
"""Upper bound on the chat template's tokens per message (role markers, separators)."""
UNCALIBRATED_RATIO = 0.15
"""Tokens per byte assumed before a model's own ratio is known: fewer than any of the study's tokenizers give
for English text (about 0.25, OpenAI's "~4 characters per token"), so an uncalibrated check errs towards silence."""
SHORTFALL = 0.9
"""A prompt counted at less than this share of its expected tokens lost part of itself."""


class ContextCheck:
    """Did a call's prompt fit its context window? Servers can cut a prompt without saying so: Ollama drops the
    oldest non-system messages (DSPy's few-shot demos) until the rest fits and reports only the kept tokens in
    `prompt_eval_count`, or cuts a latest message that alone overflows to the window (server/prompt.go
    `chatPrompt`; the runner's "truncating input prompt" warning).

    A call is counted as truncated when its reported prompt tokens (a) filled the window (`>= window -
    CONTEXT_MARGIN`), or (b) its messages' size predicts more tokens than the window holds, or (c) it was counted
    at less than `SHORTFALL` of that prediction. The prediction is bytes × the model's tokens per byte, learned from
    this model's calls that cannot have lost a message: those with nothing droppable (only system messages before
    the latest one: DSPy's zero-shot prompts, which a trial's baseline sends first) or too few bytes to overflow
    (byte-level and byte-fallback tokenizers spend at least one byte per token). The smallest ratio seen is used, so
    a terse input is not mistaken for a cut one; until three such calls are seen, `UNCALIBRATED_RATIO`."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._ratios: list[float] = []
        self._lock = threading.Lock()

    @property
    def ratio(self) -> float:
        with self._lock:
            return min(self._ratios) if len(self._ratios) >= 3 else UNCALIBRATED_RATIO

    def truncated(self, messages: list[dict[str, Any]] | None, prompt_tokens: int) -> bool:
        """Whether the call whose prompt was `messages`, counted as `prompt_tokens` by the server, was cut."""
        if prompt_tokens <= 0:
            return False  # the server reported nothing to compare (cache hit, or no usage)
        if prompt_tokens >= self.window - CONTEXT_MARGIN:
            return True
        messages = messages or []
        size = sum(len(_content(m).encode()) for m in messages)
        droppable = any(m.get("role") != "system" for m in messages[:-1])
        if size and (not droppable or size + TEMPLATE_TOKENS * len(messages) <= self.window):
            with self._lock:
                self._ratios.append(prompt_tokens / size)
            return False
        expected = self.ratio * size
        return expected > self.window or prompt_tokens < SHORTFALL * expected


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # multi-part messages: their text parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


class Meter:
    """Per-trial LM accounting, keyed by (stage, role)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stage = "setup"
        self._lock = threading.Lock()
        self.usage: dict[tuple[str, str], Usage] = defaultdict(Usage)
        self.context: dict[str, ContextCheck] = {}
        """Per role: the context check of that role's model (calibrated over the trial's calls)."""

    def record(
        self, role: str, usage: dict[str, Any], cache_hit: bool, *, messages: list[dict[str, Any]] | None = None,
        window: int | None = None,
    ) -> None:  # fmt: skip
        call = Usage(calls=1, cache_hits=int(cache_hit))
        if not cache_hit:
            call.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            call.completion_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            if window:
                with self._lock:
                    check = self.context.setdefault(role, ContextCheck(window))
                call.truncated_calls = int(check.truncated(messages, call.prompt_tokens))
        with self._lock:
            self.usage[(self.stage, role)].add(call)
        example = _EXAMPLE.get()
        if example is not None:
            example.add(call)

    def record_thinking(self, role: str, tokens: int) -> None:
        with self._lock:
            self.usage[(self.stage, role)].thinking_tokens += tokens

    def total(self, stage: str | None = None, role: str | None = None) -> Usage:
        """Usage summed over every (stage, role) matching the filters."""
        out = Usage()
        with self._lock:
            for (s, r), u in self.usage.items():
                if (stage is None or s == stage) and (role is None or r == role):
                    out.add(u)
        return out


def new_meter(name: str) -> Meter:
    """Create (or replace) the meter that LMs built with `meter=name` report to."""
    with _METERS_LOCK:
        _METERS[name] = meter = Meter(name)
    return meter


def drop_meter(name: str) -> None:
    with _METERS_LOCK:
        _METERS.pop(name, None)


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"^.*?</think>", re.DOTALL | re.IGNORECASE)


def strip_thinking(text: str) -> tuple[str, str]:
    """(answer, thinking): `<think>…</think>` blocks removed from a reasoning model's output.

    Also handles an unclosed block (the model ran out of tokens while thinking: no answer at all) and a bare
    `</think>` (chat templates that open the block in the prompt, so the output starts mid-thought).
    """
    thinking = [m.group(0) for m in _THINK_BLOCK.finditer(text)]
    answer = _THINK_BLOCK.sub("", text)
    if (m := _THINK_CLOSE.match(answer)) is not None:
        thinking.append(m.group(0))
        answer = answer[m.end() :]
    return answer.strip(), "".join(thinking)


class OutputCut(RuntimeError):
    """A reply the server cut at `max_tokens`, refused where a partial text would be taken for a whole one."""


class MeteredLM(dspy.LM):
    """A `dspy.LM` that reports each call's usage to a named `Meter`.

    For reasoning models (`reasoning=True`), `<think>` blocks are removed from every output before DSPy parses it,
    and their tokens are counted: the server reports one completion count, so the thinking share is estimated by
    the thinking text's share of characters (separate `reasoning_content` counts as thinking too).
    """

    def __init__(
        self, model: str, *, meter: str, role: str, provider: str, reasoning: bool = False,
        context: int | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(model, **kwargs)
        self.plain_args = {k: v for k, v in kwargs.items() if k != "api_key"}
        self.context = context
        """The context window its server serves it with (tokens), for the truncation check; None: unknown."""
        """How to build the same LM as a plain `dspy.LM` without its key (what a saved program carries)."""
        self.meter_name = meter
        self.role = role
        self.reasoning = reasoning
        self.arb_provider = provider
        """Which server answers (registry provider): how structured outputs are asked for (`trainables.lm.adapters`)."""
        self.refuse_cut = False
        """Raise `OutputCut` for a reply that stopped at `max_tokens` (`refusing_cut_replies`)."""
        self.cut_refused = 0

    def _process_completion(self, response: Any, merged_kwargs: dict[str, Any]) -> list[Any]:
        if self.refuse_cut and any(getattr(c, "finish_reason", None) == "length" for c in response.choices):
            self.cut_refused += 1
            raise OutputCut(f"{self.model}: the reply stopped at max_tokens={merged_kwargs.get('max_tokens')}")
        outputs = super()._process_completion(response, merged_kwargs)
        if not self.reasoning:
            return outputs
        answer_chars = thinking_chars = 0
        cleaned: list[Any] = []
        for out in outputs:
            text = out if isinstance(out, str) else out.get("text")
            answer, thinking = strip_thinking(text or "")
            extra = "" if isinstance(out, str) else str(out.get("reasoning_content") or "")
            answer_chars += len(answer)
            thinking_chars += len(thinking) + len(extra)
            cleaned.append(answer if isinstance(out, str) else {**out, "text": answer})
        meter = _METERS.get(self.meter_name)
        usage = getattr(response, "usage", None)
        completion = getattr(usage, "completion_tokens", None)
        if completion is None and isinstance(usage, dict):
            completion = usage.get("completion_tokens")
        if meter is not None and completion and thinking_chars:
            meter.record_thinking(self.role, round(int(completion) * thinking_chars / (thinking_chars + answer_chars)))
        return cleaned

    def update_history(self, entry: dict[str, Any]) -> None:
        meter = _METERS.get(self.meter_name)
        if meter is not None:
            cache_hit = lm_cache.take_hit()
            meter.record(self.role, entry.get("usage") or {}, cache_hit, messages=entry.get("messages"),
                         window=self.context)  # fmt: skip
        super().update_history(entry)


@contextmanager
def refusing_cut_replies(lm: dspy.LM) -> Iterator[None]:
    """While inside, a reply of `lm` that the server cut at `max_tokens` raises `OutputCut` instead of being parsed:
    for an optimizer that adopts what a model writes as a new instruction (GEPA's reflection), where a truncated
    proposal would silently become a candidate (reported by GEPA users). The optimizer then counts the proposal
    as failed and goes on."""
    if not isinstance(lm, MeteredLM):
        yield
        return
    before, lm.refuse_cut = lm.refuse_cut, True
    try:
        yield
    finally:
        lm.refuse_cut = before


def litellm_model(entry: ModelEntry) -> str:
    """The provider-prefixed model string DSPy routes on."""
    return f"{entry.provider_spec.litellm_prefix}/{entry.id}"


@dataclass(frozen=True)
class Endpoint:
    """Where a model answers for this trial, when that is not (only) what its registry entry says.

    `url` overrides the registry (the embedded server's port is only known at run time). `version` is the content
    of the model served there (the Ollama digest, the GGUF's sha256): with it the response cache's keys hold the
    model, not its port, so a later job on other ports reuses the answers; without it they hold the endpoint.
    `timeout_s` overrides the registry's per-call timeout (the embedded servers' is set from their measured
    speed)."""

    url: str | None = None
    version: str | None = None
    timeout_s: float | None = None


def build_lm(entry: ModelEntry, *, meter: str, role: str, at: Endpoint | None = None) -> MeteredLM:
    """A metered `dspy.LM` for one registry entry, reached `at` an endpoint (default: where the registry says).
    The API key is read from the environment here and handed to the client, never put in the trial config, so it
    cannot reach Ray's results or MLflow params."""
    at = at or Endpoint()
    provider = entry.provider_spec
    base = provider.client_base(at.url or entry.resolved_endpoint())
    if provider.started_here and not base:
        raise ArbError(f"{entry.provider} model {entry.id!r} has no server endpoint", "run it through `arb run`")
    if provider.needs_key:
        key = os.environ.get(entry.api_key_env or "")
        if not key:
            raise ArbError(f"${entry.api_key_env} is not set for model {entry.id!r}", f"export {entry.api_key_env}=...")
    else:
        key = "local"  # local servers ignore it, but OpenAI-style clients refuse to send a request without one
    model = litellm_model(entry)
    lm_cache.register_identity(model, base, lm_cache.identity(base, at.version, entry.gguf or entry.id))
    return MeteredLM(
        model,
        meter=meter,
        role=role,
        provider=entry.provider,
        temperature=entry.temperature,
        max_tokens=entry.max_tokens,
        reasoning=entry.reasoning,
        context=entry.context if provider.knows_context else None,
        num_retries=entry.call_retries,
        cache=True,  # the process's cache decides: `lm_cache.install` (per node, keyed by model identity, or none)
        **provider.connection(base, key, at.timeout_s or entry.timeout_s),
        **provider.lm_options(entry),
    )
