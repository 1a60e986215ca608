"""The engine's scheduler: it owns the model and decides which request runs when.

One worker thread loads the model, then runs the batch decoder: up to
``engine.n_parallel`` requests are generated together, a newcomer joins the
running batch at the next step and a finished or cancelled one leaves it.
Requests beyond that wait, first come first served, in a bounded queue (full:
503 with Retry-After). The HTTP layer sees only ``start``, ``wait_ready``,
``tokenize``, ``stream`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncIterator

from localllm.daemon.engine.batch_decoder import END_OF_STREAM, BatchDecoder
from localllm.daemon.engine.event_relay import EventRelay
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine
from localllm.daemon.engine.step_cost import StepCost
from localllm.errors import InvalidRequest, LocalLLMError, ModelLoading, QueueFull, ServiceUnavailable
from localllm.vocabulary import Finished, TextDelta

log = logging.getLogger(__name__)

_STOP = object()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class BatchScheduler:
    def __init__(self, engine: LlamaEngine, queue_size: int):
        self.engine = engine
        self.queue_size = queue_size
        self.state = "stopped"  # loading | ready | failed | unloading | stopped
        self.load_error: LocalLLMError | None = None
        # Requests accepted and not yet ended: at most n_parallel generating plus queue_size waiting. Counted
        # at admission, not by the queue's length, so a burst that arrives while the engine thread is busy
        # in a decode step gets exactly the capacity the settings say.
        self.capacity = engine.settings.n_parallel + queue_size
        self._admitted = 0
        self._admitted_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._ready_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._waiters_lock = threading.Lock()
        self._decoder: BatchDecoder | None = None
        self._stopping = threading.Event()
        self._stop_task: asyncio.Future | None = None
        self._relay = EventRelay()  # the engine thread's events reach their streams once per step
        # Kept by the model registry: requests holding the model loaded, when it was last used and loaded,
        # and how long it stays loaded once idle (infinity: until memory is needed).
        self.in_flight = 0
        self.loads = 0  # times loaded since the daemon started
        self.last_used = time.monotonic()
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        self.keep_alive_s = math.inf
        self.next_keep_alive_s: float | None = None  # a request's own, for the idle time after it
        self.expires_at: float | None = None  # time.monotonic() when an idle model is unloaded; None: never

    @property
    def model_name(self) -> str:
        return self.engine.name

    @property
    def running(self) -> int:
        """Requests being generated now (at most engine.n_parallel)."""
        return self._decoder.running if self._decoder is not None else 0

    @property
    def busy(self) -> bool:
        return self.running > 0

    @property
    def reused_prompt_tokens(self) -> int:
        """Prompt tokens taken from cached prefixes instead of evaluated, since start."""
        return self._decoder.reused_tokens if self._decoder is not None else 0

    @property
    def step_cost(self) -> StepCost | None:
        """What a decode step costs here, as the batch decoder measures it (None before load)."""
        return self._decoder.step_cost if self._decoder is not None else None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        """Begin loading the model in the worker thread; returns at once. After ``stop`` it loads again."""
        if self._thread is not None:
            return
        self.state, self.load_error, self._decoder = "loading", None, None
        self.loads += 1
        self._ready.clear()
        self._stopping.clear()
        self._jobs = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.engine.name}", daemon=True)
        self._thread.start()

    async def wait_ready(self) -> None:
        """Wait (without holding a thread) until the load ends; raises its error if it failed."""
        if not self._ready.is_set():
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            with self._waiters_lock:
                if self._ready.is_set():
                    future.set_result(None)
                else:
                    self._ready_waiters.append((loop, future))
            await future
        if self.state == "failed":
            raise self.load_error

    def _signal_ready(self) -> None:
        with self._waiters_lock:
            self._ready.set()
            waiters, self._ready_waiters = self._ready_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def unavailable_reason(self) -> str | None:
        """Why a new request could not be served now (model_loading, model_failed, queue_full), or None."""
        if self.state == "failed":
            return "model_failed"
        if self.state == "loading":
            return "model_loading"
        if self.state == "stopped":
            return None  # loaded for this request: it waits

        if self._admitted >= self.capacity:
            return "queue_full"
        return None

    def check_ready(self) -> None:
        if self.state == "ready":
            return
        if self.state == "failed":
            raise self.load_error
        raise ModelLoading(f"Model {self.engine.name!r} is still loading; retry in a moment.", retry_after_s=2)

    async def completion_prompt(self, text: str) -> list[int]:
        """A raw completion prompt's tokens (the start-of-text token alone for an empty one)."""
        self.check_ready()
        return await asyncio.get_running_loop().run_in_executor(None, self.engine.completion_prompt, text)

    async def render_and_tokenize(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        self.check_ready()

        def work() -> list[int]:
            return self.engine.tokenize(self.engine.render_chat(messages, tools))

        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def stream(self, job: GenerationJob) -> AsyncIterator[TextDelta | Finished]:
        """Queue ``job`` and yield its events. Leaving the loop early cancels the job."""
        self.check_ready()
        self.engine.check_sampling(job.sampling)
        if not job.prompt_tokens:
            raise InvalidRequest("The prompt is empty: nothing to generate from.", param="prompt")
        with self._admitted_lock:
            if self._admitted >= self.capacity:
                raise QueueFull(
                    f"The engine is full ({self.engine.settings.n_parallel} requests generating and "
                    f"{self.queue_size} waiting); retry shortly, or raise engine.queue_size.", retry_after_s=2)
            self._admitted += 1
        try:
            events: asyncio.Queue = asyncio.Queue()
            emit = self._relay.emitter(asyncio.get_running_loop(), events.put_nowait, job.cancel)
            self._jobs.put_nowait((job, emit))
            while True:
                event = await events.get()
                if event is END_OF_STREAM:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            job.cancel.set()  # no-op when finished; stops generation when the consumer left early
            with self._admitted_lock:
                self._admitted -= 1

    def _run(self) -> None:
        try:
            self.engine.load()
            self._decoder = BatchDecoder(self.engine)
        except LocalLLMError as exc:
            self._load_failed(exc)
        except Exception:
            log.exception("model %s failed to load", self.engine.name)
            self._load_failed(ServiceUnavailable(
                f"Model {self.engine.name!r} failed to load; see the daemon log.", code="model_load_failed"))
        else:
            self.state, self.loaded_at = "ready", time.monotonic()
            log.info("model %s ready (%d parallel sequences)", self.engine.name, self.engine.settings.n_parallel)
        self._signal_ready()
        try:
            if self.state == "ready":
                self._serve()
            else:
                self._refuse_until_stopped()
        finally:
            self._relay.flush()
            if self._decoder is not None:
                self._decoder.close()
            self.engine.close()  # the state becomes "stopped" once stop() has joined this thread

    def _load_failed(self, exc: LocalLLMError) -> None:
        self.load_error = exc
        self.state = "failed"
        log.error("model %s failed to load: %s", self.engine.name, exc.message)

    def _serve(self) -> None:
        decoder = self._decoder
        while not self._stopping.is_set():
            # Fill free slots from the queue (first come, first served); block only when idle.
            while decoder.has_free_slot:
                try:
                    item = self._jobs.get(block=decoder.running == 0)
                except queue.Empty:
                    break
                if item is _STOP:
                    break
                job, emit = item
                if job.cancel.is_set():
                    emit(END_OF_STREAM)
                    self._relay.flush()
                    continue
                decoder.admit(job, emit)
            if self._stopping.is_set():
                break
            try:
                decoder.step()
            except Exception:
                log.exception("generation failed")
                failure = ServiceUnavailable("Generation failed inside the engine; see the daemon log.")
                for slot in decoder.slots:
                    if slot.request is not None:
                        decoder.fail(slot, failure)
            self._relay.flush()  # before the next decode, and before blocking on an empty queue
        decoder.cancel_all()
        self._relay.flush()

    def _refuse_until_stopped(self) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            _job, emit = item
            emit(self.load_error)
            emit(END_OF_STREAM)
            self._relay.flush()

    async def stop(self) -> None:
        """Finish the current decode step, end running and queued requests, free the model. The state is
        "unloading" from the moment this is called until the worker has exited ("stopped"); a second call
        meanwhile waits for the same stop."""
        if self._stop_task is None:
            if self._thread is None:
                return
            self.state = "unloading"
            self._stop_task = asyncio.ensure_future(self._stop_worker())
        task = self._stop_task
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._stop_task is task:
                self._stop_task = None

    async def _stop_worker(self) -> None:
        while True:
            try:
                job, emit = self._jobs.get_nowait()
            except queue.Empty:
                break
            job.cancel.set()
            emit(END_OF_STREAM)
        self._relay.flush()
        self._stopping.set()
        thread, jobs = self._thread, self._jobs
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown, thread, jobs)
        self._thread = None  # only now may start() begin another worker
        self._ready.clear()
        self.state = "stopped"

    def _shutdown(self, thread: threading.Thread, jobs: queue.Queue) -> None:
        try:
            jobs.put_nowait(_STOP)  # wakes an idle worker; a busy one sees _stopping
        except queue.Full:
            pass
        thread.join()
        while True:  # requests that slipped in while stopping
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                self._relay.flush()
                return
            if item is not _STOP:
                item[1](END_OF_STREAM)
