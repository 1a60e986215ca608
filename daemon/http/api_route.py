"""POST /v1/route: where a chat request would go, and why, without generating.

The pipeline's own decision step (``Pipeline.decide``) with ``dry_run``: the same
guard, cache, router, policy, budget and health checks as a real request, but
nothing is sent, nothing is spent, and the cache's hit counts and the router's
traffic calibration are left alone.
"""

from __future__ import annotations

from aiohttp import web

from localllm.daemon.http.api_openai import read_json
from localllm.daemon.http.app_keys import runtime_of
from localllm.daemon.http.openapi import documented
from localllm.daemon.http.request_context import context_from_headers
from localllm.daemon.http.security import TOKEN_NAMESPACE
from localllm.daemon.requests import ChatCompletionRequest, parse_request
from localllm.decision.explanation import explain


@documented(summary="Where a chat request would go and why (guard findings, cache, router, policy), without "
            "generating anything.", request=ChatCompletionRequest, headers=("namespace", "escalation", "cache_control"),
            errors=(400, 401, 403, 404, 413, 415, 429, 503))
async def explain_route(request: web.Request) -> web.Response:
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    body = parse_request(ChatCompletionRequest, await read_json(request))
    pipeline = runtime_of(request).pipeline
    decision = await pipeline.decide(body, ctx, dry_run=True)
    return web.json_response(await explain(decision, pipeline.planner, guard_on=pipeline.decider.scanner is not None))


def add_route_routes(app: web.Application) -> None:
    app.router.add_post("/v1/route", explain_route)
