"""Typed decisions: replay a cached answer, answer locally, or send to an upstream.

``Decider.decide`` returns one of these; the pipeline acts on it and POST
/v1/route explains it. Each carries the request's findings (computed once, on
first await), the cache check, the router's score and the reasons in words.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from localllm.decision.egress_policy import EgressVerdict
from localllm.decision.guard.scan import Finding
from localllm.fallback.reliability import ReliableUpstream
from localllm.store.cache_keys import CacheKey
from localllm.store.semantic_cache import CachedAnswer
from localllm.vocabulary import Escalation, Route

if TYPE_CHECKING:
    import numpy as np


class LocalModel(Protocol):
    """A model this process serves (the engine's scheduler), as far as deciding needs it."""

    model_name: str

    def unavailable_reason(self) -> str | None: ...


class LocalModels(Protocol):
    """The models this process serves, found by name (the engine's registry)."""

    def get(self, requested: str) -> LocalModel: ...

    @property
    def default(self) -> LocalModel: ...


class PendingFindings:
    """A request's sensitive-data findings, computed once: started at once (``eager``) or on the first await.

    Scanning costs tens of milliseconds and competes with the engine for the CPU, so a
    request whose route cannot depend on it only pays for it when something needs it."""

    def __init__(self, scan: Callable[[], Awaitable[list[Finding]]], *, eager: bool):
        self._scan, self._task = scan, None
        if eager:
            self._start()

    def _start(self) -> asyncio.Future:
        if self._task is None:
            self._task = asyncio.ensure_future(self._scan())
            # A request that fails before needing the findings must not leave an unretrieved error.
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._task

    def __await__(self):
        return self._start().__await__()


@dataclass
class CacheCheck:
    """What the semantic cache said: ``outcome`` hit | miss | rejected (a close question, judged a different
    one by the verifier: a miss that the cache's safety caused) | bypass, or None with no cache configured."""

    outcome: str | None = None
    key: CacheKey | None = None
    vector: np.ndarray | None = None  # the question's embedding, computed once for cache, router and storing
    hit: CachedAnswer | None = None


@dataclass(frozen=True)
class LocalFallback:
    """What answers if an upstream decision cannot be carried out (blocked, over budget, or failing
    before its first byte). With ``cache`` (the local scope was already checked) the same local model
    answers at once; without it the local side is decided afresh."""

    model: LocalModel
    escalation: Escalation
    cache: CacheCheck | None = None
    report_reason: bool = True  # say why in X-LocalLLM-Fallback-Reason


@dataclass(kw_only=True)
class Decision(ABC):
    escalation: Escalation
    findings: PendingFindings
    cache: CacheCheck = field(default_factory=CacheCheck)
    score: float | None = None       # the complexity router's, when it was asked
    threshold: float | None = None
    reasons: list[str] = field(default_factory=list)  # plain words, for POST /v1/route
    fallback_reason: str | None = None  # another target was meant to answer; why it does not
    route_reason: str | None = None     # why it leaves the device: explicit_model | router | client_prefer | ...
    # The upstream this request would go to if escalated, with the policy's verdict for it (for explaining).
    egress: tuple[ReliableUpstream, EgressVerdict] | None = None

    @property
    @abstractmethod
    def route(self) -> Route:
        """What serves the answer: cache, local, or the upstream's trust (onprem | cloud)."""


@dataclass(kw_only=True)
class ReplayFromCache(Decision):
    model: str                               # whose answer it is
    upstream: ReliableUpstream | None = None  # set when the answer came from an upstream

    @property
    def route(self) -> Route:
        return "cache"


@dataclass(kw_only=True)
class AnswerLocally(Decision):
    model: LocalModel
    cascade_to: ReliableUpstream | None = None  # escalate a weak local answer there

    @property
    def route(self) -> Route:
        return "local"


@dataclass(kw_only=True)
class SendUpstream(Decision):
    upstream: ReliableUpstream
    verdict: EgressVerdict  # allow, or redact these findings
    egress_reason: str      # recorded in the egress audit
    if_it_fails: LocalFallback

    @property
    def route(self) -> Route:
        return self.upstream.settings.trust
