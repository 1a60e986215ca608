"""Fixtures for the upstream tests: the fake upstream on 127.0.0.1, and registries
pointed at it with short timeouts and fast retries, closed after each test."""

from __future__ import annotations

import pytest

from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.reliability import RetryPolicy
from localllm.fallback.upstream_registry import UpstreamRegistry
from tests.fallback.fake_upstream import FakeUpstream

# Small enough to keep the suite fast, large enough that the fake's normal answers never hit them.
FAST_RETRY = RetryPolicy(base_delay_s=0.02, max_delay_s=0.1, max_retry_after_s=5)
SENTINEL_KEY = "sk-SENTINEL-9f1c2e7ab34d-do-not-leak"


@pytest.fixture
async def fake_upstream():
    server = await FakeUpstream().start()
    yield server
    await server.stop()


def upstream_settings(server: FakeUpstream, kind: str = "openai-compatible", **overrides) -> UpstreamSettings:
    base_url = server.root if kind == "anthropic" else server.openai_base_url
    values = {"name": f"fake-{kind}", "kind": kind, "base_url": base_url, "trust": "cloud", "model": "fake-model",
              "connect_timeout_s": 1, "first_byte_timeout_s": 2, "timeout_s": 10, **overrides}
    return UpstreamSettings.model_validate(values)


@pytest.fixture
async def make_registry():
    """make_registry(*settings, **registry_kwargs) -> UpstreamRegistry, closed after the test."""
    made: list[UpstreamRegistry] = []

    def make(*settings: UpstreamSettings, **kwargs) -> UpstreamRegistry:
        kwargs.setdefault("retry", FAST_RETRY)
        registry = UpstreamRegistry(settings, **kwargs)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()
