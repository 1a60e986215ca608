"""Hands the engine thread's stream events to the event loops waiting for them, once per step.

Waking an event loop from another thread (``call_soon_threadsafe``) writes to its self-pipe, and
the loop, woken, takes the GIL; the engine thread then waits for the GIL back before it can start
the next decode. Done once per event, with eight streams that cost 1.5% of the engine thread's
time (py-spy, BENCHMARKS.md): time in which llama.cpp was not decoding. The relay collects the
events of a step and wakes each loop once, right before the next decode.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

_Delivery = tuple[Callable[[Any], None], threading.Event, Any]  # (put, the job's cancel flag, event)


def _deliver(deliveries: list[_Delivery]) -> None:
    for put, _cancel, event in deliveries:
        put(event)


class EventRelay:
    """A request's ``emit`` (from ``emitter``) may be called from any thread; ``flush`` delivers
    everything emitted so far, in order, with one wake-up per event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}

    def emitter(self, loop: asyncio.AbstractEventLoop, put: Callable[[Any], None],
                cancel: threading.Event) -> Callable[[Any], None]:
        """A request's ``emit``: its events go to ``put`` on ``loop`` at the next flush."""
        def emit(event: Any) -> None:
            with self._lock:
                self._pending.setdefault(loop, []).append((put, cancel, event))
        return emit

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
        for loop, deliveries in pending.items():
            try:
                loop.call_soon_threadsafe(_deliver, deliveries)
            except RuntimeError:  # the event loop is gone: nobody is listening
                for _put, cancel, _event in deliveries:
                    cancel.set()
