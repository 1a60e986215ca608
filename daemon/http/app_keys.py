"""Typed keys for the objects the aiohttp application shares with its handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from localllm.config import Settings
from localllm.daemon.engine.model_registry import ModelRegistry
from localllm.daemon.pipeline.runtime import Runtime
from localllm.errors import ServiceUnavailable


@dataclass
class RuntimeSlot:
    """The runtime once it is built: the daemon listens at once and builds it in the background."""

    runtime: Runtime | None = None
    error: str | None = None  # why it could not be built

    def get(self) -> Runtime:
        """The runtime, or a 503 that says why there is none yet."""
        if self.runtime is not None:
            return self.runtime
        if self.error is not None:
            raise ServiceUnavailable(f"localllm could not start: {self.error}", retry_after_s=60,
                                     code="startup_failed")
        raise ServiceUnavailable("localllm is starting (loading the guard, router and cache); retry shortly.",
                                 retry_after_s=2, code="starting")


SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ModelRegistry)
RUNTIME = web.AppKey("runtime", RuntimeSlot)
STARTED_AT = web.AppKey("started_at", float)


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME].get()
