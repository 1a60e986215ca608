"""The engine's scheduler: it owns the model and decides which request runs when.

This one is serial: one worker thread loads the model, then generates for one
request at a time while others wait in a bounded queue (full: 503 with
Retry-After). A batching scheduler can replace it behind the same interface
(``start``, ``wait_ready``, ``tokenize``, ``stream``, ``stop``) without the HTTP
layer noticing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator

from localllm.errors import LocalLLMError, ModelLoading, QueueFull, ServiceUnavailable

from .engine import Finished, GenerationJob, LlamaEngine, TextDelta

log = logging.getLogger(__name__)

_END = object()
_STOP = object()


class SerialScheduler:
    def __init__(self, engine: LlamaEngine, queue_size: int):
        self.engine = engine
        self.queue_size = queue_size
        self.state = "stopped"  # loading | ready | failed | stopped
        self.load_error: LocalLLMError | None = None
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._current: GenerationJob | None = None

    @property
    def model_name(self) -> str:
        return self.engine.name

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        """Begin loading the model in the worker thread; returns at once."""
        if self._thread is not None:
            return
        self.state = "loading"
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.engine.name}", daemon=True)
        self._thread.start()

    async def wait_ready(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self.state == "failed":
            raise self.load_error

    def unavailable_reason(self) -> str | None:
        """Why a new request could not be served now (model_loading, model_failed, queue_full), or None."""
        if self.state == "failed":
            return "model_failed"
        if self.state != "ready":
            return "model_loading"
        if self._jobs.qsize() >= self.queue_size:
            return "queue_full"
        return None

    def check_ready(self) -> None:
        if self.state == "ready":
            return
        if self.state == "failed":
            raise self.load_error
        raise ModelLoading(f"Model {self.engine.name!r} is still loading; retry in a moment.", retry_after_s=2)

    async def tokenize(self, text: str) -> list[int]:
        self.check_ready()
        return await asyncio.get_running_loop().run_in_executor(None, self.engine.tokenize, text)

    async def render_and_tokenize(self, messages: list[dict]) -> list[int]:
        self.check_ready()

        def work() -> list[int]:
            return self.engine.tokenize(self.engine.render_chat(messages))

        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def stream(self, job: GenerationJob) -> AsyncIterator[TextDelta | Finished]:
        """Queue ``job`` and yield its events. Leaving the loop early cancels the job."""
        self.check_ready()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone: nobody is listening
                job.cancel.set()

        try:
            self._jobs.put_nowait((job, emit))
        except queue.Full:
            raise QueueFull(
                f"The engine queue is full ({self.queue_size} requests waiting); retry shortly "
                "or raise engine.queue_size.", retry_after_s=2) from None
        try:
            while True:
                event = await events.get()
                if event is _END:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            job.cancel.set()  # no-op when finished; stops generation when the consumer left early

    def _run(self) -> None:
        try:
            self.engine.load()
        except LocalLLMError as exc:
            self.load_error = exc
            self.state = "failed"
            log.error("model %s failed to load: %s", self.engine.name, exc.message)
        except Exception:
            log.exception("model %s failed to load", self.engine.name)
            self.load_error = ServiceUnavailable(
                f"Model {self.engine.name!r} failed to load; see the daemon log.", code="model_load_failed")
            self.state = "failed"
        else:
            self.state = "ready"
            log.info("model %s ready", self.engine.name)
        self._ready.set()
        while True:
            item = self._jobs.get()
            if item is _STOP:
                break
            job, emit = item
            if job.cancel.is_set():
                continue
            if self.state != "ready":
                emit(self.load_error)
                emit(_END)
                continue
            self._current = job
            try:
                for event in self.engine.generate(job):
                    emit(event)
            except LocalLLMError as exc:
                emit(exc)
            except Exception:
                log.exception("generation failed")
                emit(ServiceUnavailable("Generation failed inside the engine; see the daemon log."))
            finally:
                self._current = None
                emit(_END)
        self.engine.close()
        self.state = "stopped"

    async def stop(self) -> None:
        """Finish the running request's current token, drop queued ones, free the model."""
        if self._thread is None:
            return
        while True:
            try:
                job, emit = self._jobs.get_nowait()
            except queue.Empty:
                break
            job.cancel.set()
            emit(_END)
        if self._current is not None:
            self._current.cancel.set()
        thread = self._thread
        self._thread = None
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown, thread)

    def _shutdown(self, thread: threading.Thread) -> None:
        self._jobs.put(_STOP)
        thread.join()
