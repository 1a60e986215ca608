"""The request path, readable as one function per endpoint.

Validation already happened (a typed request comes in). In order: pick the
model; if the request may use the cache, embed the last user turn once and
look it up (a hit is replayed, done); otherwise build and measure the prompt
and generate; when the answer is complete, store it in the cache and log the
request, both committed before the caller sees the end of the answer. The HTTP
daemon and the CLI's in-process mode run this same pipeline. Later rooms slot
in here: guard before the cache, router and fallback before generation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from localllm.config import CacheSettings
from localllm.decision_settings import CascadeSettings, PolicySettings, RouterSettings
from localllm.errors import LocalLLMError
from localllm.fallback.budget import Budget, Reservation, estimate_prompt_tokens, worst_case_usd
from localllm.fallback.errors import UpstreamError
from localllm.fallback.guard.policy import EgressPolicy
from localllm.fallback.guard.scan import Finding, RequestScanner, count_types
from localllm.fallback.guard.vault import RedactionVault
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.store.cache_keys import scope_sha256
from localllm.store.egress_audit import EgressAudit, EgressRecord, content_sha256
from localllm.store.request_log import RequestLog, RequestRecord, prompt_sha256
from localllm.store.semantic_cache import CachedAnswer, SemanticCache

from .cascade import weak_answer_reason
from .engine import Finished, GenerationJob, TextDelta
from .model_registry import ModelRegistry
from .openai_requests import ChatCompletionRequest, CompletionRequest, _Generation
from .request_context import RequestContext
from .route_decision import Escalation, RoutePlan, RoutePlanner, stricter
from .upstream_route import (
    OpenedUpstream,
    buffer_answer,
    cost_usd,
    open_upstream,
    restore_placeholders,
    upstream_named,
)

log = logging.getLogger(__name__)

_REPLAY_PIECES = re.compile(r"\s*\S+|\s+")


@dataclass
class Generation:
    """An accepted request: what serves it, and its events once iterated."""

    id: str
    model: str
    route: str  # local | cache | onprem | cloud
    events: AsyncIterator[TextDelta | Finished]
    cache: str | None = None  # hit | miss | bypass; None when no cache is configured
    similarity: float | None = None
    fallback_reason: str | None = None  # an upstream was asked for but the answer is local
    route_reason: str | None = None  # why it was escalated: router | client_prefer | cascade_* | ...
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _CacheKey:
    scope: str
    question: str


class Pipeline:
    def __init__(self, registry: ModelRegistry, *, cache: SemanticCache | None = None, embedder=None,
                 request_log: RequestLog | None = None, cache_settings: CacheSettings | None = None,
                 upstreams: UpstreamRegistry | None = None, budget: Budget | None = None,
                 local_failure_upstream: str | None = None, scanner: RequestScanner | None = None,
                 planner: RoutePlanner | None = None, audit: EgressAudit | None = None):
        self.registry = registry
        self.upstreams = upstreams
        self.budget = budget
        self.local_failure_upstream = local_failure_upstream
        self.cache = cache
        self.embedder = embedder
        self.request_log = request_log
        self.cache_settings = cache_settings or CacheSettings()
        self.scanner = scanner
        self.planner = planner or RoutePlanner(
            router_settings=RouterSettings(), cascade_settings=CascadeSettings(), upstreams=upstreams,
            policy=EgressPolicy(PolicySettings()), guard_enabled=scanner is not None)
        self.audit = audit
        self.cascade_counts = {"judged": 0, "fired": 0}

    async def chat(self, request: ChatCompletionRequest, ctx: RequestContext | None = None) -> Generation:
        ctx = ctx or RequestContext()
        messages = request.template_messages()
        # The scan (tens of ms with NER) is awaited where a decision needs it: before anything
        # leaves, and before caching. With upstreams it starts now, beside the cache lookup.
        scan = self._start_scan(messages, eager=self.upstreams is not None)
        escalation = stricter(ctx.escalation, request.localllm.escalation if request.localllm else None)
        upstream = upstream_named(self.upstreams, request.model)
        if upstream is not None:  # the client named an upstream: still subject to the policy
            answer = await self._try_upstream(upstream, request, messages, ctx, scan, "explicit_model")
            if isinstance(answer, Generation):
                return answer
            return await self._chat_locally(self.registry.default, request, messages, ctx, scan,
                                            fallback_reason=answer)
        scheduler = self.registry.get(request.model)
        unavailable = scheduler.unavailable_reason()
        if unavailable is not None and self.local_failure_upstream is not None and escalation != "never":
            # The local engine cannot take it now; the config allows this upstream instead.
            answer = await self._try_upstream(self.upstreams.get(self.local_failure_upstream), request, messages,
                                              ctx, scan, "local_unavailable", local_reason=f"local_{unavailable}")
            if isinstance(answer, Generation):
                return answer
        return await self._chat_locally(scheduler, request, messages, ctx, scan, escalation=escalation)

    async def router_score(self, messages: list[dict], vector: np.ndarray | None, *, always: bool = False
                           ) -> tuple[float | None, np.ndarray | None]:
        """The complexity score of the last user turn, reusing the cache's embedding of it."""
        if not (always or self.planner.scores_requests) or self.planner.complexity_router is None \
                or self.embedder is None:
            return None, vector
        question = last_user_text(messages)
        if vector is None:
            vector = await self.embed(question)
        return await self.planner.score(question, vector), vector

    async def scan(self, messages: list[dict]) -> list[Finding]:
        return await self.scanner.scan(messages) if self.scanner is not None else []

    def _start_scan(self, messages: list[dict], *, eager: bool) -> _PendingScan:
        return _PendingScan(lambda: self.scan(messages), eager=eager)

    async def _try_upstream(self, upstream, request: ChatCompletionRequest, messages: list[dict],
                            ctx: RequestContext, scan: Awaitable[list[Finding]], egress_reason: str, *,
                            local_reason: str | None = None, route_reason: str | None = None,
                            vector: np.ndarray | None = None, score: float | None = None) -> Generation | str:
        """The upstream's answer, or the reason it could not give one (to answer locally instead)."""
        findings = await scan
        verdict = self.planner.egress_verdict(findings, upstream)
        if verdict.action == "block":
            log.info("policy keeps a request from %s (%s)", upstream.name, ",".join(verdict.blocked_classes))
            return verdict.reason
        vault = RedactionVault()
        sent = vault.redact(messages, verdict.to_redact) if verdict.to_redact else messages
        record = self._record("chat", ctx, upstream.settings.model, request, sent)
        record.upstream, record.fallback_reason = upstream.name, local_reason
        sensitive = self.planner.policy.sensitive(findings)
        record.route_reason, record.router_score, record.sensitive = route_reason, score, len(sensitive)
        # Upstream answers cost money: they are cached too, in their own scope.
        key = self._chat_cache_key(request, f"{upstream.name}/{upstream.settings.model}", messages)
        hit, outcome, vector = await self._consult_cache(key, request, ctx, vector)
        if hit is not None:
            gen_id = record.request_id = f"chatcmpl-{uuid.uuid4().hex}"
            return self._replay(gen_id, upstream.settings.model, hit, record, ctx.started_at)
        record.cache = outcome
        record.request_id = f"chatcmpl-{uuid.uuid4().hex}"
        reservation = None
        opened = None
        try:
            max_tokens = request.max_tokens
            if self.budget is not None:
                # An explicit max_tokens makes the reserved worst case a real bound.
                max_tokens = max_tokens or self.budget.settings.default_max_tokens
                reservation = self.budget.reserve(upstream.name, worst_case_usd(
                    upstream.settings, estimate_prompt_tokens(sent), max_tokens))
            await self._audit_egress(upstream, sent, verdict, record, ctx, route_reason or egress_reason)
            opened = await open_upstream(upstream, request, sent, max_tokens)
            if not request.stream:
                # Nothing reaches a non-streaming client before the end, so a failure
                # anywhere in the upstream's answer can still be answered locally.
                opened = await buffer_answer(opened)
        except UpstreamError as exc:
            if reservation is not None:
                # Once the upstream had begun, it may bill for the attempt: count the worst case.
                self.budget.settle(reservation, reservation.amount if opened is not None else 0.0)
            log.info("upstream %s failed (%s); answering locally", upstream.name, exc.reason)
            return exc.reason
        # A prompt with sensitive values is never stored in the cache (not even redacted).
        store = (outcome in ("miss", "bypass") and vector is not None and not ctx.skip_cache_store
                 and not sensitive)

        store_answer = self._cache_writer(ctx, key, vector, upstream.settings.model, lambda: store)
        gen = self._relay(opened, record, ctx.started_at, reservation, store_answer, vault)
        gen.fallback_reason, gen.cache, gen.route_reason = local_reason, outcome, route_reason
        return gen

    async def _audit_egress(self, upstream, sent: list[dict], verdict, record: RequestRecord,
                            ctx: RequestContext, reason: str) -> None:
        if self.audit is None:
            return
        # Committed before anything is sent: a crash mid-request still leaves the trace.
        await self.audit.record(EgressRecord(
            upstream=upstream.name, trust=upstream.settings.trust, model=upstream.settings.model,
            action=verdict.action, redacted=count_types(verdict.to_redact), content_sha256=content_sha256(sent),
            reason=reason, request_id=record.request_id, namespace=ctx.namespace))

    async def _chat_locally(self, scheduler, request: ChatCompletionRequest, messages: list[dict],
                            ctx: RequestContext, scan: Awaitable[list[Finding]], *,
                            fallback_reason: str | None = None, escalation: Escalation = "never") -> Generation:
        record = self._record("chat", ctx, scheduler.model_name, request, messages)
        record.fallback_reason = fallback_reason
        key = self._chat_cache_key(request, scheduler.model_name, messages)
        gen_id = record.request_id = f"chatcmpl-{uuid.uuid4().hex}"
        hit, outcome, vector = await self._consult_cache(key, request, ctx)
        if hit is not None:
            gen = self._replay(gen_id, scheduler.model_name, hit, record, ctx.started_at)
            gen.fallback_reason = fallback_reason
            return gen
        plan = RoutePlan()
        if escalation != "never" and self.planner.escalation_upstream is not None:
            score, vector = await self.router_score(messages, vector)
            plan = self.planner.plan(await scan, escalation, score, stream=request.stream,
                                     cascade_opt_in=bool(request.localllm and request.localllm.cascade))
        record.router_score = plan.score
        if plan.escalate is not None:
            answer = await self._try_upstream(plan.escalate, request, messages, ctx, scan, plan.route_reason,
                                              route_reason=plan.route_reason, vector=vector, score=plan.score)
            if isinstance(answer, Generation):
                return answer
            record.fallback_reason = fallback_reason = answer
        prompt_tokens = await scheduler.render_and_tokenize(messages)
        if plan.cascade is not None:
            return await self._cascade(plan, gen_id, scheduler, prompt_tokens, request, messages, record, outcome,
                                       key, vector, ctx, scan)
        gen = self._generate(gen_id, scheduler, prompt_tokens, request, record, outcome, key, vector, ctx,
                             shrink=fallback_reason is not None, scan=scan, messages=messages)
        gen.fallback_reason = fallback_reason
        return gen

    async def _cascade(self, plan: RoutePlan, gen_id, scheduler, prompt_tokens, request, messages, record,
                       outcome, key, vector, ctx: RequestContext, scan) -> Generation:
        """Answer locally in full, judge the answer, and escalate it if weak and allowed."""
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens)
        job = GenerationJob(prompt_tokens, max_tokens, request.sampling(), measure_confidence=True)
        try:
            events = [event async for event in scheduler.stream(job)]
        except LocalLLMError as exc:
            self._finish_record_soon(record, ctx.started_at, exc.status, type(exc).__name__)
            exc.logged = True
            raise
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        weak = weak_answer_reason(text, events[-1], self.planner.cascade_settings)
        self.cascade_counts["judged"] += 1
        fallback_reason = None
        if weak is not None:
            self.cascade_counts["fired"] += 1
            answer = await self._try_upstream(plan.cascade, request, messages, ctx, scan, weak,
                                              route_reason=weak, vector=vector, score=plan.score)
            if isinstance(answer, Generation):
                return answer
            record.fallback_reason = fallback_reason = answer
        record.route, record.cache = "local", outcome
        # A weak answer is not cached: the next time, the upstream may be able to do better.
        store = weak is None and outcome in ("miss", "bypass") and vector is not None and not ctx.skip_cache_store
        sensitive = self.planner.policy.sensitive(await scan)

        store_answer = self._cache_writer(ctx, key, vector, scheduler.model_name, lambda: store and not sensitive)
        self._note_sensitive(record, messages, sensitive)
        observed = self._observe(_iterate(events), record, ctx.started_at, store_answer)
        return Generation(gen_id, scheduler.model_name, "local", observed, cache=outcome,
                          fallback_reason=fallback_reason)

    async def complete(self, request: CompletionRequest, ctx: RequestContext | None = None) -> Generation:
        ctx = ctx or RequestContext()
        scheduler = self.registry.get(request.model)
        record = self._record("completions", ctx, scheduler.model_name, request, request.prompt)
        key = _CacheKey(scope_sha256({"endpoint": "completions", "model": scheduler.model_name,
                                      "sampling": _sampling_scope(request)}), request.prompt)
        gen_id = record.request_id = f"cmpl-{uuid.uuid4().hex}"
        hit, outcome, vector = await self._consult_cache(key, request, ctx)
        if hit is not None:
            return self._replay(gen_id, scheduler.model_name, hit, record, ctx.started_at)
        prompt_tokens = await scheduler.tokenize(request.prompt)
        as_messages = [{"role": "user", "content": request.prompt}]
        return self._generate(gen_id, scheduler, prompt_tokens, request, record, outcome, key, vector, ctx,
                              scan=self._start_scan(as_messages, eager=False), messages=as_messages)

    # -- cache -----------------------------------------------------------------

    def _chat_cache_key(self, request: ChatCompletionRequest, model: str, messages: list[dict]) -> _CacheKey | None:
        if messages[-1]["role"] != "user":
            return None  # e.g. an assistant prefill: not a question to match
        scope = {"endpoint": "chat", "model": model, "earlier_turns": messages[:-1],
                 "tools": request.tools, "response_format": request.response_format,
                 "sampling": _sampling_scope(request)}
        return _CacheKey(scope_sha256(scope), messages[-1]["content"])

    def _deterministic(self, request: _Generation) -> bool:
        return request.temperature == 0 or request.seed is not None or self.cache_settings.allow_nondeterministic

    async def _consult_cache(self, key: _CacheKey | None, request: _Generation, ctx: RequestContext,
                             vector: np.ndarray | None = None, *, touch: bool = True
                             ) -> tuple[CachedAnswer | None, str | None, np.ndarray | None]:
        if self.cache is None:
            return None, None, None
        if key is None or not self._deterministic(request) or (ctx.skip_cache_lookup and ctx.skip_cache_store):
            return None, "bypass", None
        if not ctx.skip_cache_lookup:
            hit = await self.cache.lookup_exact(ctx.namespace, key.scope, key.question, touch=touch)
            if hit is not None:
                return hit, "hit", None
        if vector is None:  # once: for the semantic lookup, the router and storing
            vector = await self.embed(key.question)
        if ctx.skip_cache_lookup:
            return None, "bypass", vector
        hit = await self.cache.lookup_similar(ctx.namespace, key.scope, key.question, vector, touch=touch)
        return hit, ("hit" if hit else "miss"), vector

    async def embed(self, text: str) -> np.ndarray:
        embed = functools.partial(self.embedder.embed, [text], cores_busy=self.registry.generating)
        vectors = await asyncio.get_running_loop().run_in_executor(None, embed)
        return vectors[0]

    def _replay(self, gen_id: str, model: str, hit: CachedAnswer, record: RequestRecord,
                started: float) -> Generation:
        record.route, record.cache = "cache", "hit"
        usage = hit.usage

        async def replayed() -> AsyncIterator[TextDelta | Finished]:
            for piece in _REPLAY_PIECES.findall(hit.text):
                yield TextDelta(piece)
            yield Finished(hit.finish_reason, usage["prompt_tokens"], usage["completion_tokens"])

        return Generation(gen_id, model, "cache", self._observe(replayed(), record, started),
                          cache="hit", similarity=hit.similarity)

    # -- generation ------------------------------------------------------------

    def _generate(self, gen_id, scheduler, prompt_tokens, request, record, outcome, key, vector,
                  ctx: RequestContext, *, shrink: bool = False, scan: Awaitable[list[Finding]] | None = None,
                  messages: list[dict] | None = None) -> Generation:
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens, shrink=shrink)
        job = GenerationJob(prompt_tokens, max_tokens, request.sampling())
        record.route, record.cache = "local", outcome
        store = outcome in ("miss", "bypass") and vector is not None and not ctx.skip_cache_store
        sensitive: list[Finding] = []

        async def scanned() -> None:
            # Only when the outcome depends on it: scanning competes with the engine for the CPU
            # (on 2 cores, a scan beside prompt evaluation added ~13 ms to the first token).
            if scan is not None and (store or (self.request_log is not None and self.request_log.log_prompts)):
                sensitive.extend(self.planner.policy.sensitive(await scan))
                self._note_sensitive(record, messages, sensitive)

        # A prompt with sensitive values is never stored in the cache (known once scanned()).
        store_answer = self._cache_writer(ctx, key, vector, scheduler.model_name, lambda: store and not sensitive)
        events = self._observe(scheduler.stream(job), record, ctx.started_at, store_answer, before_finish=scanned)
        return Generation(gen_id, scheduler.model_name, "local", events, cache=outcome)

    def _cache_writer(self, ctx: RequestContext, key: _CacheKey, vector, model: str,
                      allowed: Callable[[], bool]) -> Callable[[str, Finished], Awaitable | None]:
        """The ``on_finished`` hook that stores a complete answer, if ``allowed()`` says so then."""

        def store_answer(text: str, event: Finished):
            if not allowed():
                return None
            usage = {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens}
            return self._store(ctx.namespace, key, vector, model, text, event.finish_reason, usage)

        return store_answer

    async def _store(self, namespace, key: _CacheKey, vector, model, text, finish_reason, usage) -> None:
        try:
            await self.cache.store(namespace, key.scope, key.question, vector, model, text, finish_reason, usage)
        except Exception:  # a cache write must never fail the answer it would cache
            log.exception("semantic cache store failed")

    def _relay(self, opened: OpenedUpstream, record: RequestRecord, started: float,
               reservation: Reservation | None, store_answer, vault: RedactionVault) -> Generation:
        """Pass an upstream's answer through, logging route, tokens and cost at the end,
        settling the budget reservation with the real cost, and caching the answer."""
        upstream = opened.upstream
        record.route = upstream.settings.trust  # onprem | cloud
        gen_id = record.request_id

        def price(text: str, event: Finished):
            record.cost_usd = cost_usd(upstream, event)
            if reservation is not None:
                self.budget.settle(reservation, record.cost_usd)
            return store_answer(text, event)

        async def events() -> AsyncIterator[TextDelta | Finished]:
            try:
                source = restore_placeholders(_prepend(opened.first, opened.rest), vault)
                async for event in self._observe(source, record, started, price):
                    yield event
            finally:
                if reservation is not None and reservation.amount:
                    # Broke off mid-answer: the upstream may have charged for it all; count the worst case.
                    self.budget.settle(reservation, reservation.amount)

        return Generation(gen_id, upstream.settings.model, record.route, events())

    async def _observe(self, source: AsyncIterator[TextDelta | Finished], record: RequestRecord, started: float,
                       on_finished: Callable[[str, Finished], Awaitable | None] | None = None,
                       before_finish: Callable[[], Awaitable[None]] | None = None
                       ) -> AsyncIterator[TextDelta | Finished]:
        """Pass ``source``'s events on. The request is logged (and ``on_finished``'s work done)
        before the Finished event goes out, so a client that saw the end has a committed row;
        errors and clients that leave early are logged too, and their answers never cached."""
        parts: list[str] = []
        finished = False
        try:
            async for event in source:
                if isinstance(event, TextDelta):
                    if not parts:
                        record.ttft_ms = _ms_since(started)
                    parts.append(event.text)
                else:
                    finished = True
                    text = "".join(parts)
                    record.prompt_tokens, record.completion_tokens = event.prompt_tokens, event.completion_tokens
                    record.answer_text = text
                    if before_finish is not None:
                        await before_finish()
                    extra = on_finished(text, event) if on_finished else None
                    await asyncio.gather(self._finish_record(record, started, 200), *([extra] if extra else []))
                yield event
        except LocalLLMError as exc:
            self._finish_record_soon(record, started, exc.status, type(exc).__name__)
            exc.logged = True  # the HTTP edge must not log it a second time
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:  # the client left before the end
                self._finish_record_soon(record, started, 499, "ClientDisconnected")
            raise
        finally:
            await source.aclose()

    # -- request log -----------------------------------------------------------

    @staticmethod
    def _note_sensitive(record: RequestRecord, messages: list[dict] | None, findings: list[Finding]) -> None:
        record.sensitive = len(findings)
        if findings and messages is not None:
            # With store.log_prompts on, the log keeps the prompt, but never its sensitive values.
            record.prompt_text = _render_messages(RedactionVault().redact(messages, findings))

    def _record(self, endpoint: str, ctx: RequestContext, model: str, request: _Generation, prompt) -> RequestRecord:
        record = RequestRecord(endpoint=endpoint, status=0, namespace=ctx.namespace, model=model,
                               stream=request.stream, prompt_sha256=prompt_sha256(prompt))
        record.prompt_text = prompt if isinstance(prompt, str) else _render_messages(prompt)
        return record

    async def _finish_record(self, record: RequestRecord, started: float, status: int,
                             error_class: str | None = None) -> None:
        record.status, record.error_class, record.latency_ms = status, error_class, _ms_since(started)
        if self.request_log is not None:
            await self.request_log.record(record)

    def _finish_record_soon(self, record: RequestRecord, started: float, status: int, error_class: str) -> None:
        record.status, record.error_class, record.latency_ms = status, error_class, _ms_since(started)
        if self.request_log is not None:
            self.request_log.record_soon(record)


def _sampling_scope(request: _Generation) -> dict:
    sampling = request.sampling()
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
            "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty, "seed": sampling.seed,
            "stop": list(sampling.stop), "max_tokens": request.max_tokens}


async def _iterate(events: list) -> AsyncIterator:
    for event in events:
        yield event


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()


class _PendingScan:
    """The request's findings, computed once: started now (``eager``) or on the first await."""

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


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])


def _render_messages(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
