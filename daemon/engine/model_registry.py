"""The models this process serves, each behind its own scheduler, found by name."""

from __future__ import annotations

import logging
from pathlib import Path

from localllm.config import Settings
from localllm.daemon.engine.llama_engine import LlamaEngine
from localllm.daemon.engine.scheduler import BatchScheduler
from localllm.errors import ModelNotFound

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self) -> None:
        self._schedulers: dict[str, BatchScheduler] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, path: Path, scheduler: BatchScheduler) -> None:
        self._schedulers[name] = scheduler
        for alias in (name, path.name, path.stem):
            self._aliases.setdefault(alias.lower(), name)

    def get(self, requested: str) -> BatchScheduler:
        name = self._aliases.get(requested.strip().lower())
        if name is None:
            served = ", ".join(sorted(self._schedulers)) or "none"
            raise ModelNotFound(
                f"The model '{requested}' is not served here (serving: {served}). "
                "Pick one from GET /v1/models, or start the daemon with --model NAME.", param="model")
        return self._schedulers[name]

    @property
    def default(self) -> BatchScheduler:
        return next(iter(self._schedulers.values()))

    def all(self) -> list[BatchScheduler]:
        return list(self._schedulers.values())

    @property
    def generating(self) -> bool:
        """Whether any model is generating now: its llama.cpp threads have the CPU cores, so helper
        models (the embedder) should keep to one thread."""
        return any(scheduler.busy for scheduler in self._schedulers.values())

    def start_all(self) -> None:
        for scheduler in self._schedulers.values():
            scheduler.start()

    async def stop_all(self) -> None:
        for scheduler in self._schedulers.values():
            await scheduler.stop()


def registry_for(settings: Settings, model_names: list[str], model_paths: list[Path]) -> ModelRegistry:
    """One batching scheduler per model, each with that model's engine settings."""
    registry = ModelRegistry()
    for name, path in zip(model_names, model_paths, strict=True):
        engine_settings = settings.engine_for(name)
        engine = LlamaEngine(name, path, engine_settings)
        registry.add(name, path, BatchScheduler(engine, engine_settings.queue_size))
    return registry
