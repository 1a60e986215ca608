"""GET /metrics: Prometheus text format, under the API's token and Host rules."""

from __future__ import annotations

from aiohttp import web

from localllm.daemon.http.app_keys import runtime_of
from localllm.daemon.http.openapi import documented
from localllm.daemon.pipeline.metrics import CONTENT_TYPE
from localllm.errors import NotFound


@documented(summary="Prometheus metrics: requests by route, latency histograms, tokens, cache, queue, memory, "
            "upstream spend and circuits, guard findings.", errors=(401, 403, 404, 429, 503))
async def metrics(request: web.Request) -> web.Response:
    collected = runtime_of(request).metrics
    if collected is None:
        raise NotFound("Metrics are off here ([metrics] enabled = false).", code="metrics_disabled")
    return web.Response(body=collected.render(), headers={"Content-Type": CONTENT_TYPE})


def add_metrics_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
