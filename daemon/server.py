"""Start the daemon: pick the models, refuse unsafe binds, serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from localllm.config import Settings
from localllm.errors import ConfigError, ModelNotFound

from .app import create_app
from .catalog import CATALOG
from .model_files import ModelFiles
from .model_registry import ModelRegistry, registry_for
from .puller import pull
from .security import is_loopback_host
from .tokens import resolve_api_token, resolve_namespace_tokens

log = logging.getLogger(__name__)


def resolve_model_file(settings: Settings, name: str) -> Path:
    """The GGUF for ``name``; catalog models missing on disk are pulled first."""
    files = ModelFiles(settings.resolved_models_dir)
    try:
        return files.resolve(name)
    except ModelNotFound:
        if name not in CATALOG:
            raise
    log.info("model %s is not in %s yet; pulling it from the catalog", name, settings.resolved_models_dir)
    return pull(name, settings.resolved_models_dir).path


def build_registry(settings: Settings, names: list[str]) -> ModelRegistry:
    paths = [resolve_model_file(settings, name) for name in names]
    return registry_for(settings, names, paths)


def check_bind_is_safe(settings: Settings, api_token: str | None) -> None:
    if not is_loopback_host(settings.server.host) and not api_token:
        raise ConfigError(
            f"Refusing to listen on {settings.server.host} without an API token: anyone on the network could "
            "use the models. Set one with `localllm token set` (or server.api_token), or bind to 127.0.0.1.")


async def serve(settings: Settings, model_names: list[str], *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the daemon until ``stop`` is set or SIGINT/SIGTERM arrives."""
    api_token = resolve_api_token(settings)
    namespace_tokens = resolve_namespace_tokens(settings)
    check_bind_is_safe(settings, api_token)
    loop = asyncio.get_running_loop()
    registry = await loop.run_in_executor(None, build_registry, settings, model_names)
    app = create_app(settings, registry, api_token=api_token, namespace_tokens=namespace_tokens)
    # aiohttp arms its keep-alive timer when a connection opens and closes it if no
    # complete request head arrived by then: that is the header read timeout
    # (slow-loris protection), and it also bounds idle keep-alive connections.
    runner = web.AppRunner(app, keepalive_timeout=settings.server.header_timeout_s,
                           handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"Cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror}. "
            "Is another daemon running? Pick another port with --port.") from None
    log.info("localllm listening on http://%s:%d", settings.server.host, settings.server.port)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
