"""The aiohttp application: middlewares at the door, OpenAI routes, model lifecycle."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from localllm.config import Settings
from localllm.errors import LocalLLMError, PayloadTooLarge, ServiceUnavailable

from .api_openai import add_routes
from .app_keys import PIPELINE, REGISTRY, SETTINGS, STARTED_AT
from .model_registry import ModelRegistry
from .pipeline import Pipeline
from .security import HostCheck, TokenCheck, cors_headers

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
               manage_models: bool = True) -> web.Application:
    """Build the daemon's app. With ``manage_models`` the app loads models at start-up and frees them at cleanup."""
    host_check = HostCheck(settings.server.host, settings.server.allowed_hosts)
    token_check = TokenCheck(api_token)
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
    app[PIPELINE] = Pipeline(registry)
    app[STARTED_AT] = time.time()
    add_routes(app)
    if manage_models:
        app.cleanup_ctx.append(_model_lifecycle)
    return app


async def _model_lifecycle(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    registry.start_all()  # loads in worker threads; /health says 503 until ready
    yield
    await registry.stop_all()
