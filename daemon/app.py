"""The aiohttp application: middlewares at the door, OpenAI routes, model lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from localllm.config import Settings
from localllm.errors import LocalLLMError, PayloadTooLarge, ServiceUnavailable
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.store.request_log import RequestRecord

from .api_openai import add_routes
from .api_store import add_store_routes
from .app_keys import PIPELINE, REGISTRY, SERVICES, SETTINGS, STARTED_AT, UPSTREAMS
from .model_registry import ModelRegistry
from .pipeline_factory import build_pipeline
from .request_context import DEFAULT_NAMESPACE, NAMESPACE_HEADER
from .route_explain import add_route_routes
from .security import HostCheck, TokenCheck, cors_headers
from .services import Services, load_embedder_for, open_services, start_cache

log = logging.getLogger(__name__)


def error_response(exc: LocalLLMError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(extra_headers or {})
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    return web.json_response(exc.to_openai(), status=exc.status, headers=headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    message = {404: "No such endpoint. See GET /v1/models, POST /v1/chat/completions, POST /v1/completions.",
               405: f"Method not allowed here; use {', '.join(sorted(getattr(exc, 'allowed_methods', ()) or ()))}."}
    body = {"error": {"message": message.get(exc.status, exc.reason), "type": kind, "param": None,
                      "code": exc.reason.lower().replace(" ", "_")}}
    return web.json_response(body, status=exc.status)


def create_app(settings: Settings, registry: ModelRegistry, *, api_token: str | None = None,
               namespace_tokens: dict[str, str] | None = None, manage_models: bool = True,
               services: Services | None = None) -> web.Application:
    """Build the daemon's app.

    With ``manage_models`` the app loads models at start-up and frees them at
    cleanup. Without ``services`` it opens its own (database, request log,
    embedder, cache) at start-up; tests pass shared ones.
    """
    host_check = HostCheck(settings.server.host, settings.server.allowed_hosts)
    token_check = TokenCheck(api_token, namespace_tokens)
    origins = settings.server.cors_origins

    @web.middleware
    async def door(request: web.Request, handler) -> web.StreamResponse:
        cors = cors_headers(request, origins)
        try:
            host_check.check(request)
            if request.method == "OPTIONS" and cors:
                return web.Response(status=204, headers=cors)
            if request.path != "/health":
                token_check.check(request)
            if request.content_length is not None and request.content_length > settings.server.max_body_bytes:
                raise PayloadTooLarge(
                    f"The request body ({request.content_length} bytes) is larger than the "
                    f"{settings.server.max_body_bytes} bytes allowed; send less, or raise server.max_body_bytes.")
            response = await handler(request)
        except LocalLLMError as exc:
            _log_refused(request, exc)
            return error_response(exc, cors)
        except web.HTTPException as exc:
            response = _http_error(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = web.json_response(
                {"error": {"message": "Internal error in localllm; see the daemon log.", "type": "server_error",
                           "param": None, "code": "internal_error"}}, status=500)
        if cors and not response.prepared:
            response.headers.update(cors)
        return response

    app = web.Application(middlewares=[door], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[STARTED_AT] = time.time()
    app[UPSTREAMS] = UpstreamRegistry(settings.upstreams) if settings.upstreams else None
    app.on_cleanup.append(_close_upstreams)
    add_routes(app)
    add_store_routes(app)
    add_route_routes(app)
    if manage_models:
        app.cleanup_ctx.append(_model_lifecycle)
    if services is None:
        app.cleanup_ctx.append(_services_lifecycle)
    else:
        _install_services(app, services)
    return app


def _install_services(app: web.Application, services: Services) -> None:
    app[SERVICES] = services
    if services.cache is not None:
        services.cache_state = "on"
    app[PIPELINE] = build_pipeline(app[SETTINGS], app[REGISTRY], services, app[UPSTREAMS])


async def _close_upstreams(app: web.Application) -> None:
    if app[UPSTREAMS] is not None:
        await app[UPSTREAMS].close()


async def _services_lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    services = await open_services(settings, with_cache=False)
    _install_services(app, services)
    warming = None
    if not settings.cache.enabled and settings.router.enabled:
        # The router scores the prompt's embedding even with the cache off.
        warming = asyncio.create_task(_load_router_embedder(app, services))
    if settings.cache.enabled:
        # The daemon answers at once; requests bypass the cache until it is warm.
        services.cache_state = "loading"
        warming = asyncio.create_task(_warm_cache(app, services))
    yield
    if warming is not None:
        await asyncio.gather(warming, return_exceptions=True)
    await services.close()


async def _warm_cache(app: web.Application, services: Services) -> None:
    try:
        await start_cache(services, app[SETTINGS])
    except Exception as exc:
        services.cache_state = "failed"
        log.error("the semantic cache could not start (%s); serving without it", exc)
        return
    pipeline = app[PIPELINE]
    pipeline.embedder, pipeline.cache = services.embedder, services.cache
    services.cache_state = "on"
    log.info("semantic cache ready")


async def _load_router_embedder(app: web.Application, services: Services) -> None:
    try:
        services.embedder = await load_embedder_for(app[SETTINGS])
    except Exception as exc:
        log.error("the embedder could not load (%s); the router cannot score requests", exc)
        return
    app[PIPELINE].embedder = services.embedder


def _log_refused(request: web.Request, exc: LocalLLMError) -> None:
    """Requests refused before the pipeline took them still get a request-log row."""
    services = request.app.get(SERVICES)
    if services is None or not request.path.startswith("/v1/") or getattr(exc, "logged", False):
        return
    services.request_log.record_soon(RequestRecord(
        endpoint=request.path.removeprefix("/v1/"), status=exc.status, error_class=type(exc).__name__,
        namespace=request.headers.get(NAMESPACE_HEADER, DEFAULT_NAMESPACE)[:64]))


async def _model_lifecycle(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    registry.start_all()  # loads in worker threads; /health says 503 until ready
    yield
    await registry.stop_all()
