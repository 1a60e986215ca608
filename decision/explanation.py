"""A decision in words and numbers, for POST /v1/route.

Findings are shown as types and spans, never values.
"""

from __future__ import annotations

from localllm.decision.decisions import AnswerLocally, Decision, ReplayFromCache, SendUpstream
from localllm.decision.guard.scan import count_types
from localllm.decision.planner import RoutePlanner


async def explain(decision: Decision, planner: RoutePlanner, *, guard_on: bool) -> dict:
    findings = await decision.findings
    sensitive: dict = {"guard": "on" if guard_on else "off", "findings": [f.describe() for f in findings]}
    if decision.egress is not None:
        upstream, verdict = decision.egress
        sensitive["egress"] = {"upstream": upstream.name, "trust": upstream.settings.trust, "action": verdict.action,
                               "redacted": count_types(verdict.to_redact),
                               "blocked_classes": list(verdict.blocked_classes)}
    threshold = decision.threshold
    if decision.score is not None and threshold is None and planner.threshold is not None:
        threshold = planner.threshold.current()
    chosen = planner.router_settings
    cache = decision.cache
    return {
        "object": "localllm.route",
        "escalation": decision.escalation,
        "sensitive": sensitive,
        "router": {"score": _rounded(decision.score), "threshold": _rounded(threshold),
                   "escalate_share": chosen.escalate_share if chosen.threshold is None else None,
                   "escalate_to": chosen.escalate_to},
        "cache": {"outcome": cache.outcome or "off",
                  "similarity": round(cache.hit.similarity, 4) if cache.hit is not None else None},
        "target": target(decision),
        "route_reason": decision.route_reason if isinstance(decision, SendUpstream) else None,
        "fallback_reason": decision.fallback_reason,
        "cascade": decision.cascade_to.name if isinstance(decision, AnswerLocally) and decision.cascade_to else None,
        "reasons": list(decision.reasons),
    }


def target(decision: Decision) -> dict:
    """What would answer: route (local | cache | onprem | cloud), upstream name, model."""
    if isinstance(decision, SendUpstream):
        upstream = decision.upstream
        return {"route": decision.route, "upstream": upstream.name, "model": upstream.settings.model}
    if isinstance(decision, ReplayFromCache):
        upstream = decision.upstream.name if decision.upstream is not None else None
        return {"route": "cache", "upstream": upstream, "model": decision.model}
    return {"route": "local", "upstream": None, "model": decision.model.model_name}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
