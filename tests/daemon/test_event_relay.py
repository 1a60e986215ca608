"""The engine thread's events reach their streams in order, together, and only when flushed."""

from __future__ import annotations

import asyncio
import threading

from localllm.daemon.engine.event_relay import EventRelay


async def test_events_from_another_thread_arrive_in_order_in_one_wake_up_per_flush(monkeypatch):
    relay = EventRelay()
    loop = asyncio.get_running_loop()
    wake_ups = []
    real_wake_up = loop.call_soon_threadsafe

    def counted_wake_up(callback, *args, **kwargs):
        if getattr(callback, "__module__", "") == EventRelay.__module__:  # not asyncio.to_thread's own
            wake_ups.append(callback)
        return real_wake_up(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted_wake_up)
    first, second = asyncio.Queue(), asyncio.Queue()
    emit_first = relay.emitter(loop, first.put_nowait, threading.Event())
    emit_second = relay.emitter(loop, second.put_nowait, threading.Event())

    def engine_step() -> None:
        for i in range(3):
            emit_first(f"a{i}")
            emit_second(f"b{i}")

    await asyncio.to_thread(engine_step)
    await asyncio.sleep(0.01)
    assert first.empty() and second.empty()  # nothing moves before the flush

    await asyncio.to_thread(relay.flush)
    got = await asyncio.wait_for(first.get(), 5)
    assert len(wake_ups) == 1  # six events, two streams, one loop: one wake-up
    assert got == "a0" and first.qsize() == 2 and second.qsize() == 3
    assert [first.get_nowait() for _ in range(2)] == ["a1", "a2"]
    assert [second.get_nowait() for _ in range(3)] == ["b0", "b1", "b2"]

    await asyncio.to_thread(relay.flush)  # nothing pending: no wake-up at all
    await asyncio.sleep(0.01)
    assert first.empty() and second.empty() and len(wake_ups) == 1


def test_events_for_a_closed_loop_cancel_their_jobs():
    relay = EventRelay()
    loop = asyncio.new_event_loop()
    cancel, other_cancel = threading.Event(), threading.Event()
    emit = relay.emitter(loop, lambda event: None, cancel)
    relay.emitter(loop, lambda event: None, other_cancel)  # a job with nothing pending
    loop.close()
    emit("token")
    relay.flush()
    assert cancel.is_set()  # the engine stops generating for a listener that is gone
    assert not other_cancel.is_set()
