"""The runtime: every part of a running localllm, opened once and wired one way.

``open_runtime`` opens the services (database, request log, guard, router,
embedder, semantic cache), the upstreams and the budget, and builds the
decider and the pipeline on them. The daemon, the CLI's in-process ``ask`` and
the tests all start localllm through it, and it returns only when every part is
ready, so nothing is attached later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from localllm.config import Settings
from localllm.daemon.engine.model_registry import ModelRegistry
from localllm.daemon.pipeline.metrics import CloudReference, DaemonMetrics
from localllm.daemon.pipeline.pipeline import Pipeline
from localllm.daemon.pipeline.services import Services, open_services
from localllm.decision.decide import Decider
from localllm.decision.egress_policy import EgressPolicy
from localllm.decision.planner import RoutePlanner
from localllm.fallback.budget import Budget
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.store.egress_audit import EgressAudit

log = logging.getLogger(__name__)

# Below this many scored requests, the escalate_share threshold comes from the
# router's shipped score distribution; from then on, from this daemon's traffic.
MIN_TRAFFIC_FOR_CALIBRATION = 200


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    services: Services
    upstreams: UpstreamRegistry | None
    pipeline: Pipeline
    owns_services: bool = True
    metrics: DaemonMetrics | None = None  # None: [metrics] enabled = false

    async def close(self) -> None:
        if self.upstreams is not None:
            await self.upstreams.close()
        if self.owns_services:
            await self.services.close()


async def open_runtime(settings: Settings, registry: ModelRegistry, *, services: Services | None = None,
                       one_shot: bool = False, db_path: Path | None = None, embedder=None, scanner=None) -> Runtime:
    """Everything but the models themselves (the registry loads those) opened and wired.

    ``services``: already opened ones to share (tests); the runtime then leaves closing them to the caller.
    ``one_shot``, ``db_path``, ``embedder``, ``scanner``: see ``open_services``."""
    owns = services is None
    if services is None:
        services = await open_services(settings, one_shot=one_shot, db_path=db_path, embedder=embedder,
                                       scanner=scanner)
    upstreams = UpstreamRegistry(settings.upstreams) if settings.upstreams else None
    metrics = DaemonMetrics(models=registry.all, upstreams=lambda: upstreams.states() if upstreams else [],
                            model_memory=registry.memory_bytes, cloud=CloudReference.from_settings(settings)
                            ) if settings.metrics.enabled else None
    pipeline = build_pipeline(settings, registry, services, upstreams, metrics)
    return Runtime(settings, registry, services, upstreams, pipeline, owns_services=owns, metrics=metrics)


@asynccontextmanager
async def running(settings: Settings, registry: ModelRegistry, **options) -> AsyncIterator[Runtime]:
    """``open_runtime`` as a context: closed on the way out."""
    runtime = await open_runtime(settings, registry, **options)
    try:
        yield runtime
    finally:
        await runtime.close()


def build_pipeline(settings: Settings, registry: ModelRegistry, services: Services,
                   upstreams: UpstreamRegistry | None, metrics: DaemonMetrics | None = None) -> Pipeline:
    budget = build_budget(settings, services)
    decider = Decider(registry, build_planner(settings, services, upstreams), upstreams=upstreams, budget=budget,
                      scanner=services.scanner, cache=services.cache, embedder=services.embedder,
                      cache_settings=settings.cache, local_failure_upstream=settings.routing.local_failure_upstream,
                      cores_busy=lambda: registry.generating)
    return Pipeline(registry, decider, request_log=services.request_log, budget=budget,
                    audit=EgressAudit(services.writer), metrics=metrics)


def build_planner(settings: Settings, services: Services, upstreams: UpstreamRegistry | None) -> RoutePlanner:
    router = services.complexity_router
    threshold = None
    if router is not None:
        from localllm.decision.router.complexity_router import EscalationThreshold

        chosen = settings.router
        threshold = EscalationThreshold(
            router.reference_scores, threshold=chosen.threshold,
            escalate_share=None if chosen.threshold is not None else chosen.escalate_share,
            min_traffic=MIN_TRAFFIC_FOR_CALIBRATION if chosen.recalibrate else 2**62)
        for score in services.recent_router_scores:
            threshold.observe(score)
    return RoutePlanner(router_settings=settings.router, cascade_settings=settings.cascade, upstreams=upstreams,
                        policy=EgressPolicy(settings.policy), guard_enabled=services.scanner is not None,
                        complexity_router=router, threshold=threshold)


def build_budget(settings: Settings, services: Services) -> Budget | None:
    """Spend caps, if any are set, seeded with this day's and month's spend from the request log."""
    capped = [settings.budget.daily_usd, settings.budget.monthly_usd]
    capped += [cap for u in settings.upstreams for cap in (u.daily_budget_usd, u.monthly_budget_usd)]
    if not settings.upstreams or all(cap is None for cap in capped):
        return None
    return Budget(settings.budget, {u.name: u for u in settings.upstreams}, spent=dict(services.spend_so_far))
