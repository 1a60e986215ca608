"""The aiohttp application: the door (Host, token, size checks), the routes, and the lifecycle.

The daemon listens at once; the runtime (guard, router, embedder, cache,
pipeline) is built in the background and the models load in worker threads.
``GET /health/live`` answers 200 as soon as the process serves HTTP; ``GET
/health`` answers 200 only when every part is ready, and API requests get a
503 with Retry-After until then.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from localllm.config import Settings
from localllm.daemon.engine.model_registry import ModelRegistry
from localllm.daemon.http.api_metrics import add_metrics_routes
from localllm.daemon.http.api_ollama import add_ollama_routes
from localllm.daemon.http.api_openai import PUBLIC_PATHS, SHOW_DETAILS, add_routes
from localllm.daemon.http.api_route import add_route_routes
from localllm.daemon.http.api_store import add_store_routes
from localllm.daemon.http.api_ui import UI_PATHS, add_ui_routes
from localllm.daemon.http.app_keys import REGISTRY, RUNTIME, SETTINGS, STARTED_AT, RuntimeSlot
from localllm.daemon.http.client_errors import quiet_client_protocol_errors
from localllm.daemon.http.openapi import add_openapi_route
from localllm.daemon.http.rate_limit import RateLimiter
from localllm.daemon.http.request_context import NAMESPACE_HEADER
from localllm.daemon.http.security import HostCheck, OriginCheck, TokenCheck, cors_headers
from localllm.daemon.pipeline.runtime import Runtime, open_runtime
from localllm.errors import LocalLLMError, PayloadTooLarge, RateLimited, ServiceUnavailable
from localllm.store.request_log import RequestRecord
from localllm.vocabulary import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)


def error_response(exc: LocalLLMError, extra_headers: dict[str, str] | None = None, *,
                   ollama: bool = False) -> web.Response:
    """OpenAI's error shape, or Ollama's ({"error": message}) on Ollama's endpoints."""
    headers = dict(extra_headers or {})
    if isinstance(exc, ServiceUnavailable | RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    body = {"error": exc.message} if ollama else exc.to_openai()
    return web.json_response(body, status=exc.status, headers=headers)


def _http_error(exc: web.HTTPException, *, ollama: bool = False) -> web.Response:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    message = {404: "No such endpoint. See GET /v1/models, POST /v1/chat/completions, POST /v1/completions.",
               405: f"Method not allowed here; use {', '.join(sorted(getattr(exc, 'allowed_methods', ()) or ()))}."}
    if ollama:
        return web.json_response({"error": message.get(exc.status, exc.reason)}, status=exc.status)
    body = {"error": {"message": message.get(exc.status, exc.reason), "type": kind, "param": None,
                      "code": exc.reason.lower().replace(" ", "_")}}
    return web.json_response(body, status=exc.status)


def create_app(settings: Settings, registry: ModelRegistry, *, runtime: Runtime | None = None,
               api_token: str | None = None, namespace_tokens: dict[str, str] | None = None,
               on_startup_failure: Callable[[BaseException], None] | None = None) -> web.Application:
    """Build the daemon's app.

    Without ``runtime`` the app is the daemon: at start-up it loads the models and builds the runtime in
    the background, and frees both at cleanup (``on_startup_failure`` hears if the runtime cannot be
    built). With a ``runtime`` already built (tests, which share one model) it serves that at once and
    leaves models and runtime to their owner.
    """
    host_check = HostCheck(settings.server.host, settings.server.allowed_hosts)
    origin_check = OriginCheck(settings.server.cors_origins, settings.server.allowed_hosts)
    rate_limiter = RateLimiter(settings.server.rate_limit_per_minute)
    token_check = TokenCheck(api_token, namespace_tokens)
    origins = settings.server.cors_origins

    @web.middleware
    async def door(request: web.Request, handler) -> web.StreamResponse:
        cors = cors_headers(request, origins)
        try:
            host_check.check(request)
            origin_check.check(request)
            if request.method == "OPTIONS" and cors:
                return web.Response(status=204, headers=cors)
            if request.path in UI_PATHS:
                pass  # the dashboard's files hold no data: its data calls carry the token
            elif request.path in PUBLIC_PATHS:  # answered to anyone; details only with a valid token
                request[SHOW_DETAILS] = token_check.allows(request)
            else:
                token_check.check(request)
                rate_limiter.take(_rate_key(request) if token_check.tokens else "-")
            if request.content_length is not None and request.content_length > settings.server.max_body_bytes:
                raise PayloadTooLarge(
                    f"The request body ({request.content_length} bytes) is larger than the "
                    f"{settings.server.max_body_bytes} bytes allowed; send less, or raise server.max_body_bytes.")
            response = await handler(request)
        except LocalLLMError as exc:
            _log_refused(request, exc)
            return error_response(exc, cors, ollama=request.path.startswith("/api/"))
        except web.HTTPException as exc:
            response = _http_error(exc, ollama=request.path.startswith("/api/"))
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = web.json_response(
                {"error": {"message": "Internal error in localllm; see the daemon log.", "type": "server_error",
                           "param": None, "code": "internal_error"}}, status=500)
        if cors and not response.prepared:
            response.headers.update(cors)
        return response

    quiet_client_protocol_errors()
    app = web.Application(middlewares=[door], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[STARTED_AT] = time.time()
    app[RUNTIME] = RuntimeSlot(runtime)
    add_routes(app)
    add_store_routes(app)
    add_route_routes(app)
    add_openapi_route(app)
    add_ollama_routes(app)
    add_metrics_routes(app)
    add_ui_routes(app)
    if runtime is None:
        app.cleanup_ctx.append(functools.partial(_lifecycle, on_startup_failure=on_startup_failure))
    return app


async def _lifecycle(app: web.Application, *, on_startup_failure) -> AsyncIterator[None]:
    """Models load in worker threads and the runtime is built beside them; both are freed at cleanup."""
    registry, slot = app[REGISTRY], app[RUNTIME]
    registry.start_all()
    building = asyncio.create_task(_build_runtime(app[SETTINGS], registry, slot, on_startup_failure))
    yield
    if not building.done():
        building.cancel()
    await asyncio.gather(building, return_exceptions=True)
    if slot.runtime is not None:
        await slot.runtime.close()
    await registry.stop_all()


async def _build_runtime(settings: Settings, registry: ModelRegistry, slot: RuntimeSlot, on_failure) -> None:
    started = time.perf_counter()
    try:
        slot.runtime = await open_runtime(settings, registry)
    except Exception as exc:
        slot.error = str(exc) or type(exc).__name__
        if on_failure is not None:
            on_failure(exc)  # the server stops and reports it
        else:
            log.error("localllm could not start: %s", slot.error)
        return
    log.info("runtime ready in %.1f s (guard, router, cache)", time.perf_counter() - started)


def _rate_key(request: web.Request) -> str:
    """Whose allowance a request spends: its (checked) token's, keyed by a hash, never the token itself."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if not presented.strip():
        return "-"
    return hashlib.sha256(presented.strip().encode()).hexdigest()


def _log_refused(request: web.Request, exc: LocalLLMError) -> None:
    """Requests refused before the pipeline took them still get a request-log row."""
    runtime = request.app[RUNTIME].runtime
    if runtime is None or not request.path.startswith("/v1/") or getattr(exc, "logged", False):
        return
    record = RequestRecord(
        endpoint=request.path.removeprefix("/v1/"), status=exc.status, error_class=type(exc).__name__,
        namespace=request.headers.get(NAMESPACE_HEADER, DEFAULT_NAMESPACE)[:64])
    if runtime.metrics is not None:
        runtime.metrics.observe(record)
    runtime.services.request_log.record_soon(record)
