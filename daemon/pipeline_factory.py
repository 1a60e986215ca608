"""Assemble the pipeline from settings and opened services: one way, for the daemon
and for the CLI's in-process mode alike."""

from __future__ import annotations

from localllm.config import Settings
from localllm.fallback.budget import Budget
from localllm.fallback.guard.policy import EgressPolicy
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.store.egress_audit import EgressAudit

from .model_registry import ModelRegistry
from .pipeline import Pipeline
from .route_decision import RoutePlanner
from .services import Services

# Below this many scored requests, the escalate_share threshold comes from the
# router's shipped score distribution; from then on, from this daemon's traffic.
MIN_TRAFFIC_FOR_CALIBRATION = 200


def build_pipeline(settings: Settings, registry: ModelRegistry, services: Services,
                   upstreams: UpstreamRegistry | None) -> Pipeline:
    return Pipeline(registry, cache=services.cache, embedder=services.embedder,
                    request_log=services.request_log, cache_settings=settings.cache,
                    upstreams=upstreams, budget=build_budget(settings, services),
                    local_failure_upstream=settings.routing.local_failure_upstream,
                    scanner=services.scanner, planner=build_planner(settings, services, upstreams),
                    audit=EgressAudit(services.writer))


def build_planner(settings: Settings, services: Services, upstreams: UpstreamRegistry | None) -> RoutePlanner:
    router = services.complexity_router
    threshold = None
    if router is not None:
        from .router.complexity_router import EscalationThreshold

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
