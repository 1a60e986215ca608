"""Typed keys for the objects the aiohttp application shares with its handlers."""

from __future__ import annotations

from aiohttp import web

from localllm.config import Settings
from localllm.fallback.upstream_registry import UpstreamRegistry

from .model_registry import ModelRegistry
from .pipeline import Pipeline
from .services import Services

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ModelRegistry)
PIPELINE = web.AppKey("pipeline", Pipeline)
SERVICES = web.AppKey("services", Services)
UPSTREAMS = web.AppKey("upstreams", UpstreamRegistry | None)
STARTED_AT = web.AppKey("started_at", float)
