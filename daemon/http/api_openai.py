"""OpenAI-compatible endpoints (chat completions, completions, models) and health: liveness and readiness."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing

import psutil
from aiohttp import web

from localllm.daemon.http import openai_responses as shapes
from localllm.daemon.http.app_keys import REGISTRY, RUNTIME, STARTED_AT, runtime_of
from localllm.daemon.http.openapi import documented
from localllm.daemon.http.request_context import context_from_headers
from localllm.daemon.http.security import TOKEN_NAMESPACE
from localllm.daemon.http.sse import ClientGone, SSEWriter
from localllm.daemon.pipeline.generation import Generation
from localllm.daemon.requests import ChatCompletionRequest, CompletionRequest, parse_request
from localllm.errors import InvalidRequest, LocalLLMError, PayloadTooLarge, UnsupportedMediaType
from localllm.store.embedder import MODEL_ID
from localllm.vocabulary import AnswerText, TextDelta, ToolCall

log = logging.getLogger(__name__)

ROUTE_HEADER = "X-LocalLLM-Route"
CACHE_HEADER = "X-LocalLLM-Cache"
SIMILARITY_HEADER = "X-LocalLLM-Cache-Similarity"
FALLBACK_HEADER = "X-LocalLLM-Fallback-Reason"
ROUTE_REASON_HEADER = "X-LocalLLM-Route-Reason"
# Answered without a token: liveness and readiness, for supervisors and `localllm status`. Without a
# valid token (when one is set) they say only whether the daemon is up and ready.
PUBLIC_PATHS = frozenset({"/health", "/health/live", "/openapi.json", "/"})
SHOW_DETAILS = web.RequestKey("show_details", bool)


async def read_json(request: web.Request) -> object:
    """The body as JSON: only with a JSON content type (a web page's form or text/plain post is not
    an API call), at most ``MAX_JSON_DEPTH`` deep, and with valid Unicode text."""
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"Send the body as JSON with `Content-Type: application/json` (got {request.content_type!r}); "
            "with curl, add -H 'Content-Type: application/json'.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"The request body is larger than the {request.app._client_max_size} bytes allowed; "
            "send less, or raise server.max_body_bytes.") from None
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    if _depth_exceeds(raw, MAX_JSON_DEPTH):
        raise InvalidRequest(f"The request body nests JSON more than {MAX_JSON_DEPTH} levels deep.")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if b"\\u" in raw and _holds_lone_surrogate(body):
        raise InvalidRequest("The request body holds a lone UTF-16 surrogate escape (like \\ud800), which is not "
                             "text; send valid Unicode.")
    return body


# Deeper than any real request (OpenAI's tool schemas stay far below): refused before parsing, which
# would otherwise recurse until Python's limit.
MAX_JSON_DEPTH = 64


def _is_json(content_type: str) -> bool:
    kind = content_type.lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a linear scan, no parsing)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _holds_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(item) for item in value)
    return False


@documented(summary="Chat completion (OpenAI's shape), as JSON or streamed as Server-Sent Events.",
            request=ChatCompletionRequest, streams=True, headers=("namespace", "escalation", "cache_control"),
            errors=(400, 401, 403, 404, 413, 415, 429, 503))
async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    body = parse_request(ChatCompletionRequest, await read_json(request))
    gen = await runtime_of(request).pipeline.chat(body, ctx)
    if body.stream:
        return await _stream(request, gen, chat=True, include_usage=body.include_usage, logprobs=bool(body.logprobs))
    answer = await _collect(gen)
    return _json(shapes.chat_completion(gen, answer, answer.logprobs if body.logprobs else None), gen)


@documented(summary="Text completion of a raw prompt (OpenAI's legacy shape), as JSON or SSE.",
            request=CompletionRequest, streams=True, headers=("namespace", "cache_control"),
            errors=(400, 401, 403, 404, 413, 415, 429, 503))
async def completions(request: web.Request) -> web.StreamResponse:
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    body = parse_request(CompletionRequest, await read_json(request))
    gen = await runtime_of(request).pipeline.complete(body, ctx)
    if body.stream:
        return await _stream(request, gen, chat=False, include_usage=body.include_usage)
    answer = await _collect(gen)
    return _json(shapes.text_completion(gen, answer.text, answer.finished), gen)


async def _collect(gen: Generation) -> AnswerText:
    # aclosing: if the client goes away (handler cancelled), the job is cancelled now, not at GC.
    async with aclosing(gen.events) as events:
        return await AnswerText.read(events)


def served_by(gen: Generation) -> dict[str, str]:
    """Headers that say what served the answer."""
    headers = {ROUTE_HEADER: gen.route}
    if gen.cache is not None:
        headers[CACHE_HEADER] = gen.cache
    if gen.similarity is not None:
        headers[SIMILARITY_HEADER] = f"{gen.similarity:.4f}"
    if gen.fallback_reason is not None:
        headers[FALLBACK_HEADER] = gen.fallback_reason
    if gen.route_reason is not None:
        headers[ROUTE_REASON_HEADER] = gen.route_reason
    return headers


def _json(payload: dict, gen: Generation) -> web.Response:
    return web.json_response(payload, headers=served_by(gen))


async def _stream(request: web.Request, gen: Generation, *, chat: bool, include_usage: bool,
                  logprobs: bool = False) -> web.StreamResponse:
    events = gen.events.__aiter__()
    # Wait for the first event before sending headers, so a full queue or an
    # engine error still becomes a proper HTTP status instead of a broken stream.
    first = await anext(events, None)
    writer = SSEWriter(request, headers=served_by(gen))
    await writer.open()
    chunks = shapes.ChatChunks(gen, with_usage=include_usage, logprobs=logprobs) if chat else None
    try:
        for chunk in chunks.start() if chat else []:
            await writer.send(chunk)
        event = first
        while event is not None:
            if isinstance(event, TextDelta):
                for chunk in (chunks.text(event.text, event.logprobs) if chat
                              else [shapes.completion_chunk(gen, event.text)]):
                    await writer.send(chunk)
            elif isinstance(event, ToolCall):  # only chat answers have calls
                for chunk in chunks.tool_call(event):
                    await writer.send(chunk)
            elif chat:
                for chunk in chunks.finished(event):
                    await writer.send(chunk)
            else:
                await writer.send(shapes.completion_chunk(gen, "", event.finish_reason))
                if include_usage:
                    await writer.send(shapes.completion_usage_chunk(gen, event))
            event = await anext(events, None)
        await writer.done()
    except ClientGone:
        log.debug("client disconnected mid-stream; generation cancelled")
    except LocalLLMError as exc:
        # Headers are gone already: report in-band, as OpenAI does, then end the stream.
        log.warning("stream failed after it started: %s", exc.__class__.__name__)
        try:
            await writer.send(exc.to_openai())
            await writer.done()
        except ClientGone:
            pass
    finally:
        await events.aclose()  # stops generation if the client went away mid-stream
    return writer.response


@documented(summary="The models served: local ones, the embedder, and each upstream's.", errors=(401, 403, 429, 503))
async def list_models(request: web.Request) -> web.Response:
    started = int(request.app[STARTED_AT])
    # Every installed model: any of them loads on its first request.
    names = await asyncio.get_running_loop().run_in_executor(None, request.app[REGISTRY].installed_names)
    data = [{"id": name, "object": "model", "created": started, "owned_by": "localllm"} for name in names]
    runtime = runtime_of(request)
    if runtime.services.embedder is not None:
        data.append({"id": MODEL_ID, "object": "model", "created": started, "owned_by": "localllm"})
    upstreams = runtime.upstreams
    for name in upstreams.names() if upstreams is not None else []:
        model = upstreams.get(name).settings.model
        data.append({"id": f"{name}/{model}", "object": "model", "created": started, "owned_by": name})
    return web.json_response({"object": "list", "data": data})


@documented(summary="Liveness: 200 as soon as the daemon serves HTTP.", public=True, errors=(403,))
async def live(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP (it may still be starting; /health says when it is ready)."""
    return web.json_response({"service": "localllm", "status": "alive"})


@documented(summary="Readiness: 200 once models, guard, router and cache are ready, else 503; details with the "
            "token when one is set.", public=True, errors=(403, 503))
async def health(request: web.Request) -> web.Response:
    """Readiness: 200 only when the runtime is built (guard, router, cache) and every model is loaded."""
    registry = request.app[REGISTRY]
    slot = request.app[RUNTIME]
    runtime = slot.runtime
    models = [{"id": s.model_name, **registry.describe(s), "busy": s.busy, "running": s.running,
               "waiting": s.waiting, "reused_prompt_tokens": s.reused_prompt_tokens} for s in registry.all()]
    # Ready once the models loaded at start have loaded; later loads and unloads are the normal course.
    first_loads = [s for s in registry.preloaded() if s.loaded_at is None]
    if slot.error is not None or any(s.state == "failed" for s in first_loads):
        status = "error"
    elif any(s.state == "loading" for s in first_loads):
        status = "loading"
    else:
        status = "ok" if runtime is not None else "starting"
    http_status = 200 if status == "ok" else 503
    if not request.get(SHOW_DETAILS, True):
        return web.json_response({"service": "localllm", "status": status, "ready": status == "ok"},
                                 status=http_status)
    process = psutil.Process()
    services = runtime.services if runtime is not None else None
    payload = {"service": "localllm", "status": status, "ready": status == "ok", "models": models,
               "uptime_s": round(time.time() - request.app[STARTED_AT], 1),
               "pid": process.pid, "memory_rss_mb": round(process.memory_info().rss / 2**20, 1),
               "memory_budget_mb": round(registry.budget_bytes / 2**20),
               "models_resident_mb": round(registry.resident_bytes / 2**20),
               "cache": services.cache_state if services is not None else "starting",
               "guard": ("on" if services.scanner is not None else "off") if services is not None else "starting",
               "router": ("on" if services.complexity_router is not None else "off") if services is not None
               else "starting",
               "upstreams": _upstream_states(runtime)}
    if slot.error is not None:
        payload["error"] = slot.error
    if runtime is not None:
        payload["cascade"] = dict(runtime.pipeline.cascade_counts)
    return web.json_response(payload, status=http_status)


def _upstream_states(runtime) -> list[dict]:
    upstreams = runtime.upstreams if runtime is not None else None
    if upstreams is None:
        return []
    return [{"name": state.name, "circuit": state.state, "failures": state.consecutive_failures,
             "half_open_in_s": None if state.seconds_until_half_open is None
             else round(state.seconds_until_half_open, 1),
             "endpoints": [{"url": url, "circuit": endpoint.state, "failures": endpoint.consecutive_failures,
                            "in_flight": in_flight}
                           for url, endpoint, in_flight in upstreams.endpoint_states(state.name)]}
            for state in upstreams.states()]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
