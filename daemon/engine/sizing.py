"""Sizing models to the box: the memory budget all loaded models share, and how many sequences
(``n_parallel = "auto"``) each model gets."""

from __future__ import annotations

import logging

import psutil

from localllm.config import EngineSettings
from localllm.daemon.engine.gpu_fit import gpu_devices, layers_that_fit
from localllm.daemon.models.footprint import Footprint, MiB, estimate_footprint
from localllm.daemon.models.gguf_info import GGUFInfo

log = logging.getLogger(__name__)

AUTO_BUDGET_SHARE = 0.75  # of the machine's RAM
AUTO_BUDGET_RESERVE = 1024 * MiB  # left to the OS, the guard, the embedder and the daemon itself
MIN_AUTO_BUDGET = 256 * MiB
SLOTS_PER_CORE = 4  # measured: 8 slots on 2 cores beat 4 (1.13x tokens/s, 0.56x first-token latency)
MIN_AUTO_SLOTS, MAX_AUTO_SLOTS = 4, 16


def memory_budget_bytes(settings: EngineSettings) -> int:
    """``engine.memory_budget_mb``, or the automatic share of RAM when it is 0."""
    if settings.memory_budget_mb:
        return settings.memory_budget_mb * MiB
    total = psutil.virtual_memory().total
    return max(int(total * AUTO_BUDGET_SHARE) - AUTO_BUDGET_RESERVE, MIN_AUTO_BUDGET)


def auto_parallel(info: GGUFInfo, settings: EngineSettings, budget: int) -> int:
    """Sequences for ``n_parallel = "auto"``: what the cores keep busy, as long as the model with that
    many sequences' KV cache takes at most half the budget (room for a second model)."""
    slots = min(max(SLOTS_PER_CORE * settings.threads, MIN_AUTO_SLOTS), MAX_AUTO_SLOTS)
    while slots > 1 and footprint_for(info, settings, slots).total > budget // 2:
        slots -= 1
    return slots


def footprint_for(info: GGUFInfo, settings: EngineSettings, n_parallel: int | None = None) -> Footprint:
    slots = n_parallel if n_parallel is not None else int(settings.n_parallel)
    return estimate_footprint(info, n_ctx=settings.n_ctx, n_parallel=slots, kv_cache_type=settings.kv_cache_type)


def sized(settings: EngineSettings, info: GGUFInfo | None, budget: int) -> EngineSettings:
    """``settings`` with ``n_parallel`` resolved to a number (the batch holds one token per sequence) and
    ``n_gpu_layers = "auto"`` to the layers that fit the GPU."""
    if settings.n_parallel == "auto":
        slots = auto_parallel(info, settings, budget) if info is not None else MIN_AUTO_SLOTS
        settings = settings.model_copy(update={"n_parallel": slots, "n_batch": max(settings.n_batch, slots)})
    if settings.n_gpu_layers == "auto":
        settings = settings.model_copy(update={"n_gpu_layers": _auto_gpu_layers(info, settings)})
    return settings


def _auto_gpu_layers(info: GGUFInfo | None, settings: EngineSettings) -> int | str:
    devices = gpu_devices()
    if not devices or info is None:
        log.info("n_gpu_layers auto: %s; all layers stay on the CPU",
                 "no GPU in this llama.cpp build" if not devices else "the model's header is unreadable")
        return 0
    device = max(devices, key=lambda d: d.free)
    layers = layers_that_fit(info, device.free, n_ctx=settings.n_ctx, n_parallel=int(settings.n_parallel),
                             kv_cache_type=settings.kv_cache_type)
    log.info("n_gpu_layers auto: %s of %s layers on %s (%.0f MiB free)", "all" if layers < 0 else layers,
             info.shape.n_layer if info.shape else "?", device.name, device.free / MiB)
    return "all" if layers < 0 else layers
