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
