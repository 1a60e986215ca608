"""Start the daemon: pick the models, refuse unsafe binds, serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from localllm.config import Settings
from localllm.daemon.engine.model_registry import ModelRegistry, registry_for
from localllm.daemon.http.app import create_app
from localllm.daemon.http.security import is_loopback_host
from localllm.daemon.http.tokens import resolve_api_token, resolve_namespace_tokens
from localllm.daemon.models.catalog import CATALOG
from localllm.daemon.models.model_files import ModelFiles
from localllm.daemon.models.puller import pull
from localllm.errors import ConfigError, LocalLLMError, ModelNotFound, StartupFailed

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


def build_registry(settings: Settings, names: list[str], *, with_preload: bool = True) -> ModelRegistry:
    """The models named (pulled first if they are catalog models not yet here) load at start, with
    engine.preload unless told not to; every other model in the models dir loads on its first request."""
    wanted = list(dict.fromkeys([*names, *(settings.engine.preload if with_preload else [])]))
    paths = [resolve_model_file(settings, name) for name in wanted]
    return registry_for(settings, wanted, paths, models_dir=settings.resolved_models_dir)


def check_bind_is_safe(settings: Settings, api_token: str | None) -> None:
    if not is_loopback_host(settings.server.host) and not api_token:
        raise ConfigError(
            f"Refusing to listen on {settings.server.host} without an API token: anyone on the network could "
            "use the models. Set one with `localllm token set` (or server.api_token), or bind to 127.0.0.1.")


async def serve(settings: Settings, model_names: list[str], *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the daemon until ``stop`` is set or SIGINT/SIGTERM arrives.

    It listens at once (``/health/live``) and becomes ready (``/health``) once its models are loaded and its
    runtime is built; if the runtime cannot be built (a guard model missing, the database unreadable...)
    it stops and raises the reason."""
    api_token = resolve_api_token(settings)
    namespace_tokens = resolve_namespace_tokens(settings)
    check_bind_is_safe(settings, api_token)
    loop = asyncio.get_running_loop()
    registry = await loop.run_in_executor(None, build_registry, settings, model_names)
    stop = stop or asyncio.Event()
    failure: list[BaseException] = []

    def startup_failed(exc: BaseException) -> None:
        failure.append(exc)
        stop.set()

    app = create_app(settings, registry, api_token=api_token, namespace_tokens=namespace_tokens,
                     on_startup_failure=startup_failed)
    # aiohttp arms its keep-alive timer when a connection opens and closes it if no
    # complete request head arrived by then: that is the header read timeout
    # (slow-loris protection), and it also bounds idle keep-alive connections.
    # On stop: the socket closes at once, requests in flight get shutdown_grace_s to finish, then the
    # runtime and the models are freed.
    runner = web.AppRunner(app, keepalive_timeout=settings.server.header_timeout_s,
                           handler_cancellation=True, access_log=None,
                           shutdown_timeout=settings.server.shutdown_grace_s)
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
    if failure:
        exc = failure[0]
        if isinstance(exc, LocalLLMError):
            raise exc
        raise StartupFailed(f"localllm could not start: {exc}") from exc
