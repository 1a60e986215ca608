"""Where a request goes: guard findings, client preference, policy, router score, health.

Order (GUIDE): guard -> cache -> router -> target. The pipeline asks for a plan
after the cache missed; ``plan`` never sends anything and never spends budget,
so POST /v1/route (explain) shows exactly the plan a real request would get.
A request goes to an upstream only if the router (or the client) says it is
hard, the policy allows it (after redaction if needed) and the upstream is
healthy; the budget is checked when the request is really sent. Everything
else is answered locally, possibly escalated afterwards by the cascade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from localllm.config.decision import CascadeSettings, RouterSettings
from localllm.decision.egress_policy import EgressPolicy, EgressVerdict
from localllm.decision.guard.scan import Finding
from localllm.fallback.reliability import ReliableUpstream
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.vocabulary import Escalation


@dataclass
class RoutePlan:
    score: float | None = None
    threshold: float | None = None
    escalate: ReliableUpstream | None = None     # send there now
    route_reason: str | None = None              # why it was escalated (header X-LocalLLM-Route-Reason)
    cascade: ReliableUpstream | None = None      # answer locally, escalate a weak answer there
    reasons: list[str] = field(default_factory=list)  # plain words, for the explain endpoint


class RoutePlanner:
    def __init__(self, *, router_settings: RouterSettings, cascade_settings: CascadeSettings,
                 upstreams: UpstreamRegistry | None, policy: EgressPolicy, guard_enabled: bool,
                 complexity_router=None, threshold=None):
        self.router_settings = router_settings
        self.cascade_settings = cascade_settings
        self.upstreams = upstreams
        self.policy = policy
        self.guard_enabled = guard_enabled
        self.complexity_router = complexity_router
        self.threshold = threshold  # EscalationThreshold

    @property
    def escalation_upstream(self) -> ReliableUpstream | None:
        name = self.router_settings.escalate_to
        return self.upstreams.get(name) if name and self.upstreams is not None else None

    @property
    def scores_requests(self) -> bool:
        """Score only when the score can change something (explain always scores)."""
        return self.complexity_router is not None and self.escalation_upstream is not None

    async def score(self, text: str, vector: np.ndarray) -> float | None:
        if self.complexity_router is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, self.complexity_router.score, text, vector)

    def egress_verdict(self, findings: Sequence[Finding], upstream: ReliableUpstream) -> EgressVerdict:
        trust = upstream.settings.trust
        if not self.guard_enabled and trust != "onprem":
            # Nothing was scanned, so nothing can be redacted: only onprem may receive it.
            return EgressVerdict("block", blocked_classes=("unscanned",))
        return self.policy.verdict(findings, trust)

    def plan(self, findings: Sequence[Finding], escalation: Escalation, score: float | None, *,
             stream: bool, cascade_opt_in: bool = False, observe: bool = True) -> RoutePlan:
        plan = RoutePlan(score=score)
        if score is not None and self.threshold is not None:
            plan.threshold = self.threshold.current()
            if observe:
                self.threshold.observe(score)
        upstream = self.escalation_upstream
        if upstream is None:
            plan.reasons.append("local: router.escalate_to is not set")
            return plan
        if escalation == "never":
            plan.reasons.append("local: the client asked to stay local")
            return plan
        verdict = self.egress_verdict(findings, upstream)
        if verdict.action == "block":
            plan.reasons.append(blocked_reason(verdict, upstream))
            return plan
        if verdict.action == "redact":
            plan.reasons.append(f"{len(verdict.to_redact)} sensitive value(s) would be redacted before "
                                f"{upstream.name}")
        breaker = upstream.breaker.state
        if breaker.state == "open":
            plan.reasons.append(f"local: upstream {upstream.name} is unhealthy (circuit open)")
            return plan
        if escalation == "prefer":
            plan.escalate, plan.route_reason = upstream, "client_prefer"
            plan.reasons.append(f"{upstream.name}: the client asked to escalate")
        elif score is not None and plan.threshold is not None and score >= plan.threshold:
            plan.escalate, plan.route_reason = upstream, "router"
            plan.reasons.append(f"{upstream.name}: router score {score:.3f} >= threshold {plan.threshold:.3f}")
        else:
            if score is not None and plan.threshold is not None:
                plan.reasons.append(f"local: router score {score:.3f} < threshold {plan.threshold:.3f}")
            cascade = self.cascade_settings
            if cascade.enabled and (not stream or cascade.streaming or cascade_opt_in):
                plan.cascade = upstream
                plan.reasons.append(f"cascade: a weak local answer would be escalated to {upstream.name}")
        return plan


def blocked_reason(verdict: EgressVerdict, upstream: ReliableUpstream) -> str:
    return (f"local: policy blocks {', '.join(verdict.blocked_classes)} for {upstream.settings.trust} "
            f"upstream {upstream.name}")
