"""OpenAI's API (or any OpenAI-compatible API priced per token): a key from the environment, no server of ours."""

from __future__ import annotations

from trainables.providers.base import Provider


class OpenAI(Provider):
    name = "openai"
    api = True
    needs_key = True
    knows_context = False  # the window is the provider's, and prompts here are far below it
    base_env = "OPENAI_BASE_URL"
    default_base = "https://api.openai.com/v1"
    # An API serves many requests at once; one trial at 1-2 s per call and one at a time is the grid's critical
    # path (~650 program calls in a phase-1 trial). 8 keeps a trial far below OpenAI's lowest tier's request
    # limit (500 RPM at Tier 1, platform.openai.com/docs/guides/rate-limits) at ~2 s per call: 240 RPM.
    in_flight = 8
    # At a rate limit every trial's calls meet 429s together: more attempts, each waiting as `Retry-After` says,
    # keep a burst from failing the trial (2^0 … 2^5 s: about a minute in all without the header).
    retries = 6
