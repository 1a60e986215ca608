"""``[[upstreams]]``, [budget] and [routing]: stronger models elsewhere, what they may cost, and when
they stand in for the local engine.

One ``[[upstreams]]`` entry of the config: where a stronger model lives and how to reach it.

Validated on its own so that a typo in one upstream fails at start-up naming the
field, not at the first request that needs it. Uniqueness of ``name`` across the
list is checked by ``check_unique_names``, which the Settings model calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from localllm.config.section import Section

UpstreamKind = Literal["openai", "anthropic", "openai-compatible"]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class UpstreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                      description="Unique name of this upstream; clients may ask for it as the model, "
                      "and its key is stored under it.")
    kind: UpstreamKind = Field(description="Wire format: openai (chat completions), anthropic (Messages API), "
                               "or openai-compatible (vLLM, llama.cpp server, Groq, OpenRouter, ...).")
    base_url: str | None = Field(
        None, description="API root, e.g. http://gpu-box:8000/v1. Required for openai-compatible; "
        "defaults to the vendor's public API for openai and anthropic.")
    base_urls: list[str] = Field(
        default_factory=list, description="Several API roots serving the same model (a pool: vLLM or llama.cpp "
        "servers, other localllm daemons). Each request goes to the one with the fewest requests in flight; "
        "each has its own circuit breaker; a failure before the first token moves on to the next. Instead "
        "of base_url.")
    trust: Literal["onprem", "cloud"] = Field(
        description="What data may reach it: onprem (your own network) or cloud (a third party).")
    model: str = Field(min_length=1, max_length=256, description="Model name to ask the upstream for.")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens (0 for on-prem).")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens.")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Longest one attempt may take, first byte to last.")
    connect_timeout_s: float = Field(
        3.0, gt=0, le=120, description="Seconds to open a connection; short so that an offline box falls back fast.")
    first_byte_timeout_s: float = Field(
        20.0, gt=0, le=3600, description="Seconds to wait for the first token, and the longest silence allowed "
        "between tokens once streaming (a longer gap counts as a stalled stream).")
    max_concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight to this upstream at once.")
    daily_budget_usd: float | None = Field(None, ge=0, description="Spend cap per UTC day for this upstream.")
    monthly_budget_usd: float | None = Field(None, ge=0, description="Spend cap per UTC month for this upstream.")
    max_retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 5xx, "
                             "only before the first token has been passed on.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            # Credentials in a URL end up in logs and `config show`; keys belong in the keyring.
            raise ValueError("must not contain a user name or password; store the key with `localllm keys set`")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        return value.strip().rstrip("/")

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        urls = [cls._http_url(url) for url in value]
        if len(set(urls)) != len(urls):
            raise ValueError("lists the same URL twice")
        return urls

    @model_validator(mode="before")
    @classmethod
    def _default_base_url(cls, data):
        if isinstance(data, dict) and data.get("base_urls"):
            if data.get("base_url") is not None:
                raise ValueError("set base_url or base_urls (a pool), not both")
            data = {**data, "base_url": data["base_urls"][0]}  # the first stands for the pool in messages
        if isinstance(data, dict) and data.get("base_url") is None:
            kind = data.get("kind")
            if kind == "openai-compatible":
                raise ValueError('base_url is required for kind = "openai-compatible"')
            if kind in DEFAULT_BASE_URLS:
                data = {**data, "base_url": DEFAULT_BASE_URLS[kind]}
        return data

    @property
    def url(self) -> str:
        """base_url, never None after validation (typed for callers)."""
        assert self.base_url is not None
        return self.base_url

    @property
    def endpoints(self) -> list[str]:
        """Every API root requests may go to: the pool, or base_url alone."""
        return list(self.base_urls) or [self.url]


def first_cloud_upstream(upstreams: Iterable[UpstreamSettings]) -> UpstreamSettings | None:
    """The upstream whose prices value the answers served on the device (`localllm stats`, /metrics)."""
    return next((u for u in upstreams if u.trust == "cloud"), None)


def check_unique_names(upstreams: Iterable[UpstreamSettings]) -> None:
    """Raise ValueError naming the first duplicate; for a validator on the Settings list."""
    seen: set[str] = set()
    for upstream in upstreams:
        if upstream.name in seen:
            raise ValueError(f"upstream name {upstream.name!r} is used twice; names must be unique")
        seen.add(upstream.name)


class BudgetSettings(Section):
    daily_usd: float | None = Field(None, ge=0, description="Spend cap per UTC day across all upstreams.")
    monthly_usd: float | None = Field(None, ge=0, description="Spend cap per UTC month across all upstreams.")
    default_max_tokens: int = Field(
        1024, ge=1, description="max_tokens sent upstream when a request sets none, so the reserved worst "
        "case is a real bound.")


class RoutingSettings(Section):
    local_failure_upstream: str | None = Field(
        None, description="Upstream that answers when the local engine cannot (model loading or failed, queue "
        "full). Unset: answer 503. What may reach it is decided by [policy], as for any egress.")
