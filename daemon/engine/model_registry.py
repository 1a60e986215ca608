"""The models this process serves: found by name, loaded on demand, unloaded when idle or to make room.

Every installed model (a file in the models dir) can be asked for by name; the first request loads it
and waits, and requests that arrive during the load wait for the same load. Each loaded model has its
own batch scheduler and KV cache, so requests for different models run side by side.

Memory: before a load, the model's footprint is estimated from its GGUF (``footprint.py``). If the
loaded models and the newcomer would exceed the budget, idle models are unloaded, least recently used
first; a model with requests in flight is never unloaded (the load waits for it to finish). A model
that cannot fit even alone is refused with both figures. Loads happen one at a time, so the budget is
never promised twice.

Keep-alive: a model loaded on demand is unloaded ``engine.keep_alive`` after its last request (a
request may set its own); models loaded at start stay until their memory is needed. Every load and
unload is logged with its reason and duration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from localllm.config import Settings
from localllm.config.engine import duration_seconds
from localllm.daemon.engine.fallback_templates import family_format
from localllm.daemon.engine.llama_engine import LlamaEngine, ModelLoadError
from localllm.daemon.engine.scheduler import BatchScheduler
from localllm.daemon.engine.sizing import footprint_for, memory_budget_bytes, sized
from localllm.daemon.engine.tool_calls import template_format
from localllm.daemon.models.catalog import entry_for_filename
from localllm.daemon.models.footprint import Footprint, MiB
from localllm.daemon.models.gguf_info import GGUFInfo, read_gguf_info
from localllm.daemon.models.model_files import ModelFiles
from localllm.errors import InvalidGGUF, LocalLLMError, ModelNotFound, ServiceUnavailable, UnsafeModelName

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 1.0
MEMORY_WAIT_S = 60.0  # how long a load waits for busy models to make room before a 503


class ModelTooLarge(ServiceUnavailable):
    code = "model_too_large"


class ModelBusy(ServiceUnavailable):
    code = "model_busy"


@dataclass
class _Entry:
    name: str
    path: Path
    scheduler: BatchScheduler
    footprint: Footprint | None  # None when the header lacks the shape (then the file size stands in)
    preloaded: bool  # loaded at start: stays until its memory is needed
    parallel_source: str  # "auto" or "config"
    info: GGUFInfo | None  # its header, as read when it was found

    @property
    def need(self) -> int:
        if self.footprint is not None:
            return self.footprint.total
        try:
            return self.path.stat().st_size  # a file whose header could not be read: its size stands in
        except OSError:
            return 0


class Lease:
    """A request's hold on a loaded model: it is not unloaded until every lease is released."""

    def __init__(self, registry: ModelRegistry, entry: _Entry, keep_alive_s: float | None):
        self._registry, self._entry, self._keep_alive_s = registry, entry, keep_alive_s
        self._released = False
        self._loop = asyncio.get_running_loop()

    @property
    def scheduler(self) -> BatchScheduler:
        return self._entry.scheduler

    def release(self) -> None:
        """Give the hold back (once; later calls do nothing). From another thread (a garbage-collected
        answer), the release happens on the serving loop."""
        if self._released:
            return
        self._released = True
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._registry._release(self._entry, self._keep_alive_s)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._registry._release, self._entry, self._keep_alive_s)


class ModelRegistry:
    def __init__(self, settings: Settings | None = None, *, models_dir: Path | None = None,
                 budget_bytes: int | None = None):
        self.settings = settings or Settings()
        self.models_dir = models_dir  # None: only the models added (no discovery)
        self.budget_bytes = budget_bytes if budget_bytes is not None else memory_budget_bytes(self.settings.engine)
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._default: str | None = None
        self._load_lock: asyncio.Lock | None = None  # made on first use, in the serving loop
        self._released: asyncio.Event | None = None
        self._reaper: asyncio.Task | None = None

    # -- finding models ---------------------------------------------------------------------------

    def add(self, name: str, path: Path, *, preload: bool = True) -> BatchScheduler:
        """Serve the model file ``path`` as ``name`` (loaded by ``start_all`` when ``preload``)."""
        info = _header(path)
        configured = self.settings.engine_for(name)
        engine_settings = sized(configured, info, self.budget_bytes)
        engine = LlamaEngine(name, path, engine_settings)
        if info is not None:  # known before loading: a cached answer with tool calls is read this way
            engine.tool_format = template_format(info.chat_template or (family.template if (
                family := family_format(info.architecture)) else None))
        scheduler = BatchScheduler(engine, engine_settings.queue_size)
        keep_alive = self.settings.models.get(name).keep_alive if name in self.settings.models else None
        if keep_alive is not None:
            scheduler.keep_alive_s = duration_seconds(keep_alive, "keep_alive")
        else:  # loaded at start: kept until memory is needed
            scheduler.keep_alive_s = math.inf if preload else configured.keep_alive_s
        entry = _Entry(name, path, scheduler, footprint_for(info, engine_settings) if info and info.shape else None,
                       preloaded=preload, parallel_source="auto" if configured.n_parallel == "auto" else "config",
                       info=info)
        self._entries[name] = entry
        self._default = self._default or name
        for alias in (name, path.name, path.stem):
            self._aliases.setdefault(alias.lower(), name)
        return scheduler

    def get(self, requested: str) -> BatchScheduler:
        """The scheduler for ``requested`` (loaded or not); any installed model is found."""
        return self._entry(requested).scheduler

    def _entry(self, requested: str) -> _Entry:
        requested = requested.strip().removesuffix(":latest")  # Ollama's tag: a local file has only that one
        key = requested.lower()
        name = self._aliases.get(key)
        if name is not None:
            entry = self._entries[name]
            if entry.scheduler.state in ("stopped", "unloading") and not entry.path.is_file():
                self._forget(entry)  # deleted while it was unloaded
            else:
                return entry
        if self.models_dir is not None:
            files = ModelFiles(self.models_dir)
            try:
                path = files.resolve(requested)
            except (ModelNotFound, UnsafeModelName):  # "a/b" is no file name, so no model here either
                pass
            else:
                catalog = entry_for_filename(path.name)
                name = catalog.name if catalog is not None else path.stem
                if name.lower() in self._aliases:  # another spelling of a model already known
                    return self._entries[self._aliases[name.lower()]]
                log.info("model %s found in %s; it loads on its first request", name, self.models_dir)
                self.add(name, path, preload=False)
                self._aliases.setdefault(key, name)
                return self._entries[name]
        installed = ", ".join(self.installed_names()) or "none"
        raise ModelNotFound(f"The model '{requested}' is not installed here (installed: {installed}). "
                            f"Run `localllm pull {requested}`, or pick one from GET /v1/models.", param="model")

    def installed_names(self) -> list[str]:
        """Every model that can be asked for: known here, or a file in the models dir."""
        names = set(self._entries)
        if self.models_dir is not None:
            names |= {(m.catalog_name or m.path.stem) for m in ModelFiles(self.models_dir).list()}
        return sorted(names)

    def _forget(self, entry: _Entry) -> None:
        del self._entries[entry.name]
        self._aliases = {alias: name for alias, name in self._aliases.items() if name != entry.name}
        if self._default == entry.name:
            self._default = next(iter(self._entries), None)

    @property
    def default(self) -> BatchScheduler:
        if self._default is None:
            raise ModelNotFound("No model is configured: set engine.model.", param="model")
        return self._entries[self._default].scheduler

    def all(self) -> list[BatchScheduler]:
        return [entry.scheduler for entry in self._entries.values()]

    def preloaded(self) -> list[BatchScheduler]:
        return [entry.scheduler for entry in self._entries.values() if entry.preloaded]

    def describe(self, scheduler: BatchScheduler) -> dict:
        """What `localllm ps` and /api/ps show of one model."""
        entry = self._entries[scheduler.model_name]
        expires = scheduler.expires_at
        return {"name": entry.name, "path": str(entry.path), "state": scheduler.state, "size": entry.need,
                "size_vram": 0, "footprint": entry.footprint.describe() if entry.footprint else None,
                "in_flight": scheduler.in_flight, "parallel": scheduler.engine.settings.n_parallel,
                "parallel_source": entry.parallel_source, "context_length": scheduler.engine.settings.n_ctx,
                "load_seconds": scheduler.load_seconds, "loads": scheduler.loads, "preloaded": entry.preloaded,
                "expires_in_s": None if expires is None else max(round(expires - time.monotonic(), 1), 0.0)}

    def memory_bytes(self, scheduler: BatchScheduler) -> int:
        """The estimated memory the model takes when loaded."""
        return self._entries[scheduler.model_name].need

    def header(self, scheduler: BatchScheduler) -> GGUFInfo | None:
        """The model's GGUF header as read when it was found (its file may be gone since)."""
        return self._entries[scheduler.model_name].info

    @property
    def resident_bytes(self) -> int:
        return sum(entry.need for entry in self._entries.values() if entry.scheduler.state in ("loading", "ready"))

    @property
    def generating(self) -> bool:
        """Whether any model is generating now: its llama.cpp threads have the CPU cores, so helper
        models (the embedder) should keep to one thread."""
        return any(entry.scheduler.busy for entry in self._entries.values())

    # -- loading and unloading --------------------------------------------------------------------

    async def acquire(self, scheduler: BatchScheduler, keep_alive_s: float | None = None) -> Lease:
        """Hold ``scheduler``'s model loaded for one request, loading it first if need be (the request
        waits). ``keep_alive_s``: the request's own keep-alive, for the idle time after it (None: the model's).

        The hold is taken before anything is awaited, and every unload checks for holds in the same step
        as it begins: a model is never unloaded under a request that holds it."""
        entry = self._entries[scheduler.model_name]
        scheduler.in_flight += 1
        scheduler.expires_at = None
        lease = Lease(self, entry, keep_alive_s)
        try:
            while scheduler.state != "ready":
                await self._load(entry)
        except BaseException:
            lease.release()
            raise
        return lease

    def _release(self, entry: _Entry, keep_alive_s: float | None) -> None:
        scheduler = entry.scheduler
        scheduler.in_flight -= 1
        scheduler.last_used = time.monotonic()
        if keep_alive_s is not None:
            scheduler.next_keep_alive_s = keep_alive_s  # as in Ollama: for the idle time after this request
        if scheduler.in_flight == 0:
            keep = scheduler.next_keep_alive_s if scheduler.next_keep_alive_s is not None else scheduler.keep_alive_s
            scheduler.next_keep_alive_s = None
            scheduler.expires_at = None if math.isinf(keep) else scheduler.last_used + keep
            self._signal_room()
            if scheduler.expires_at is not None:
                self._start_reaper()

    def _signal_room(self) -> None:
        if self._released is not None:
            self._released.set()

    async def _load(self, entry: _Entry) -> None:
        """Load ``entry``'s model, or wait for the load or unload under way; returns when either ended."""
        scheduler = entry.scheduler
        if scheduler.state == "unloading":
            await scheduler.stop()  # the one under way: then it is loaded afresh
            return
        if scheduler.state in ("loading", "ready"):
            await scheduler.wait_ready()  # another request started this load
            return
        if self._load_lock is None:
            self._load_lock, self._released = asyncio.Lock(), asyncio.Event()
        async with self._load_lock:
            if scheduler.state != "stopped" and scheduler.state != "failed":
                return  # loaded, or being unloaded, while this request waited for the lock: look again
            if scheduler.state == "failed":
                await scheduler.stop()  # a failed load is tried again (the file may be fixed)
            self._check_file(entry)
            await self._make_room(entry)
            started = time.perf_counter()
            log.info("loading model %s (%s; %.0f of %.0f MiB in use)", entry.name, _need(entry),
                     self.resident_bytes / MiB, self.budget_bytes / MiB)
            scheduler.start()
            try:
                await scheduler.wait_ready()
            finally:
                scheduler.load_seconds = round(time.perf_counter() - started, 3)
                self._signal_room()
            log.info("model %s loaded in %.2f s", entry.name, scheduler.load_seconds)

    def _check_file(self, entry: _Entry) -> None:
        """The file is still there and still a GGUF: else a clear error for this model only."""
        if not entry.path.is_file():
            self._forget(entry)
            raise ModelNotFound(f"Model {entry.name!r} is no longer installed ({entry.path} is gone): run "
                                f"`localllm pull {entry.name}`, or pick one from GET /v1/models.", param="model")
        try:
            info = read_gguf_info(entry.path)
        except InvalidGGUF as exc:
            raise ModelLoadError(f"Model {entry.name!r} cannot be loaded: {exc.message}", retry_after_s=30) from None
        entry.info = info
        if entry.footprint is None and info.shape is not None:
            entry.footprint = footprint_for(info, entry.scheduler.engine.settings)

    async def _make_room(self, entry: _Entry) -> None:
        need = entry.need
        if need > self.budget_bytes:
            raise ModelTooLarge(
                f"Model {entry.name!r} needs about {_need(entry)}, more than the whole memory budget of "
                f"{self.budget_bytes / MiB:.0f} MiB. Raise engine.memory_budget_mb, or lower n_ctx or "
                f"n_parallel for it ([models.\"{entry.name}\"]).", retry_after_s=60)
        deadline = time.monotonic() + MEMORY_WAIT_S
        while self.resident_bytes + need > self.budget_bytes:
            idle = [e for e in self._entries.values() if e is not entry and e.scheduler.state in ("ready", "failed")
                    and e.scheduler.in_flight == 0]
            if idle:
                victim = min(idle, key=lambda e: e.scheduler.last_used)
                await self._unload(victim, f"making room for {entry.name} ({need / MiB:.0f} MiB)")
                continue
            # Everything resident is busy or loading: wait for a request to end or a load to finish.
            if time.monotonic() > deadline:
                raise ModelBusy(f"Model {entry.name!r} needs {need / MiB:.0f} MiB and the loaded models, all busy, "
                                f"hold {self.resident_bytes / MiB:.0f} of the {self.budget_bytes / MiB:.0f} MiB "
                                "budget; retry shortly, or raise engine.memory_budget_mb.", retry_after_s=5)
            log.info("model %s waits for memory: every loaded model is busy", entry.name)
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def unload_when_idle(self, scheduler: BatchScheduler, reason: str) -> None:
        """Unload now if idle, else as soon as the requests it is answering are done (Ollama's keep_alive 0)."""
        if scheduler.in_flight:
            scheduler.next_keep_alive_s = 0
        else:
            await self.unload(scheduler, reason)

    async def unload(self, scheduler: BatchScheduler, reason: str) -> bool:
        """Unload a model now; refused while it has requests in flight. False if it was not loaded."""
        entry = self._entries[scheduler.model_name]
        if scheduler.in_flight:
            raise ModelBusy(f"Model {entry.name!r} is answering {scheduler.in_flight} request(s); try again when "
                            "they are done.", retry_after_s=2)
        return await self._unload(entry, reason)

    async def _unload(self, entry: _Entry, reason: str) -> bool:
        """Unload ``entry``'s model if it is loaded and nobody holds it (checked in the step that begins
        the unload, so a request acquiring it meanwhile keeps it); True if it was unloaded."""
        scheduler = entry.scheduler
        if scheduler.in_flight or scheduler.state not in ("loading", "ready", "failed"):
            return False
        started = time.perf_counter()
        scheduler.expires_at = None
        await scheduler.stop()  # "unloading" from here on: a new request waits for the end, then reloads
        log.info("unloaded model %s (%s) in %.2f s, %.0f MiB freed", entry.name, reason,
                 time.perf_counter() - started, entry.need / MiB)
        self._signal_room()
        return True

    def _start_reaper(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(self._reap_expired())

    async def _reap_expired(self) -> None:
        """Unload models whose keep-alive ran out while idle; ends when nothing is due any more."""
        while True:
            now = time.monotonic()
            due = [e for e in self._entries.values() if e.scheduler.expires_at is not None
                   and e.scheduler.expires_at <= now and e.scheduler.in_flight == 0
                   and e.scheduler.state in ("ready", "failed")]
            for entry in due:
                expires = entry.scheduler.expires_at
                if expires is None or expires > time.monotonic():
                    continue  # used again while another model was being unloaded
                await self._unload(entry, "its keep_alive ran out while idle")
            pending = [e.scheduler.expires_at for e in self._entries.values()
                       if e.scheduler.expires_at is not None and e.scheduler.state in ("ready", "failed")]
            if not pending:
                return
            await asyncio.sleep(min(max(min(pending) - time.monotonic(), 0.0), REAP_INTERVAL_S))

    def start_all(self) -> None:
        """Start loading the models loaded at start (engine.model and engine.preload), as many as the
        budget holds; the others load on their first request."""
        for entry in self._entries.values():
            if not entry.preloaded or entry.scheduler.state != "stopped":
                continue
            if self.resident_bytes + entry.need > self.budget_bytes:
                log.warning("not preloading %s: it needs %s and %.0f of %.0f MiB are taken; it loads on its "
                            "first request", entry.name, _need(entry), self.resident_bytes / MiB,
                            self.budget_bytes / MiB)
                continue
            log.info("loading model %s at start (%s)", entry.name, _need(entry))
            entry.scheduler.start()

    async def stop_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for entry in self._entries.values():
            await entry.scheduler.stop()


def _header(path: Path) -> GGUFInfo | None:
    try:
        return read_gguf_info(path)
    except LocalLLMError as exc:  # a broken file is reported when it is loaded, for that model alone
        log.warning("cannot read the header of %s: %s", path, exc.message)
        return None


def _need(entry: _Entry) -> str:
    return entry.footprint.describe() if entry.footprint is not None else f"{entry.need / MiB:.0f} MiB (file size)"


def registry_for(settings: Settings, model_names: list[str], model_paths: list[Path], *,
                 models_dir: Path | None = None) -> ModelRegistry:
    """A registry serving these models (loaded by ``start_all``); with ``models_dir``, any other model
    installed there loads on its first request."""
    registry = ModelRegistry(settings, models_dir=models_dir)
    for name, path in zip(model_names, model_paths, strict=True):
        registry.add(name, path)
    return registry
