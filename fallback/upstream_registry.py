"""The configured upstreams, ready to use: one reliable provider per ``[[upstreams]]`` entry.

All of them share one aiohttp ``ClientSession`` (one connection pool, DNS cache
and TLS context), created on first use inside the running event loop, since a
session belongs to the loop it was made in. Close the registry on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aiohttp

from localllm import __version__
from localllm.config.upstreams import UpstreamSettings, check_unique_names
from localllm.errors import ModelNotFound
from localllm.fallback.circuit_breaker import BreakerState, CircuitBreaker
from localllm.fallback.providers import provider_for
from localllm.fallback.reliability import ReliableUpstream, RetryPolicy
from localllm.fallback.upstream_pool import Endpoint, PooledUpstream

log = logging.getLogger(__name__)

USER_AGENT = f"localllm/{__version__}"


class UpstreamRegistry:
    def __init__(self, upstreams: Iterable[UpstreamSettings], *, retry: RetryPolicy | None = None,
                 breaker_failures: int = 5, breaker_cooldown_s: float = 30.0):
        upstreams = list(upstreams)
        check_unique_names(upstreams)
        self._session: aiohttp.ClientSession | None = None

        def reliable(settings: UpstreamSettings, breaker_name: str) -> ReliableUpstream:
            return ReliableUpstream(provider_for(settings, self.session), retry=retry,
                                    breaker=CircuitBreaker(breaker_name, failure_threshold=breaker_failures,
                                                           cooldown_s=breaker_cooldown_s))

        self._upstreams: dict[str, ReliableUpstream | PooledUpstream] = {}
        for settings in upstreams:
            if len(settings.endpoints) == 1:
                self._upstreams[settings.name] = reliable(settings, settings.name)
            else:  # a pool: one reliable upstream per endpoint, under the same name
                self._upstreams[settings.name] = PooledUpstream([
                    Endpoint(url, reliable(settings.model_copy(update={"base_url": url}), f"{settings.name} {url}"))
                    for url in settings.endpoints])

    def __contains__(self, name: str) -> bool:
        return name in self._upstreams

    def names(self) -> list[str]:
        return list(self._upstreams)

    def get(self, name: str) -> ReliableUpstream | PooledUpstream:
        try:
            return self._upstreams[name]
        except KeyError:
            configured = ", ".join(self._upstreams) or "none"
            raise ModelNotFound(f"No upstream named {name!r} (configured: {configured}). Add it as "
                                "[[upstreams]] in the config file.", param="model") from None

    def states(self) -> list[BreakerState]:
        """Circuit state of every upstream, for `localllm status`."""
        return [upstream.breaker.state for upstream in self._upstreams.values()]

    def endpoint_states(self, name: str) -> list[tuple[str, BreakerState, int]]:
        """(url, circuit state, requests in flight) of each endpoint of upstream ``name``."""
        upstream = self.get(name)
        if isinstance(upstream, PooledUpstream):
            return upstream.endpoint_states()
        return [(upstream.settings.url, upstream.breaker.state, 0)]

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env stays off: a proxy variable meant for a browser must not silently
            # route on-prem traffic (and its prompts) through a third party.
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> UpstreamRegistry:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
