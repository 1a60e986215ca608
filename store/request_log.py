"""The request log: one row per request, with no prompt text unless asked for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import sqlite_utils

from localllm.store.writer import StoreWriter

log = logging.getLogger(__name__)


def prompt_sha256(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class RequestRecord:
    endpoint: str
    status: int
    namespace: str = "default"
    request_id: str | None = None
    model: str | None = None
    route: str | None = None
    cache: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    error_class: str | None = None
    prompt_sha256: str | None = None
    upstream: str | None = None
    cost_usd: float | None = None
    fallback_reason: str | None = None
    route_reason: str | None = None
    router_score: float | None = None
    sensitive: int | None = None
    energy_joules: float | None = None  # local generation: its share of the decode steps' energy
    energy_source: str | None = None    # rapl (measured) | estimated, with "+nvml" when GPUs' counters are added
    prompt_text: str | None = None
    answer_text: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


class RequestLog:
    """Writes request rows through the store's writer. A row that cannot be written (disk full, an I/O
    error) never fails the request it describes: it waits in a bounded backlog and goes in with the next
    write that succeeds; beyond ``max_backlog`` the oldest are dropped and counted."""

    def __init__(self, writer: StoreWriter, *, log_prompts: bool = False, max_backlog: int = 10_000):
        self.writer = writer
        self.log_prompts = log_prompts
        self.dropped = 0  # rows lost for good (backlog overflow)
        self._backlog: deque[dict] = deque()
        self._max_backlog = max_backlog
        self._lock = threading.Lock()  # the backlog is touched from the writer's thread too
        self._failing_since: float | None = None

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def _row(self, record: RequestRecord) -> dict:
        row = asdict(record)
        row["stream"] = int(record.stream)
        if not self.log_prompts:
            row["prompt_text"] = row["answer_text"] = None
        return row

    async def record(self, record: RequestRecord) -> None:
        """Write the row; returns once it is committed, or once it is known not to be (kept for later)."""
        future = self._submit(self._row(record))
        try:
            await asyncio.wrap_future(future)
        except Exception:  # noted in the backlog by _submit's callback; the answer goes on
            pass

    def record_soon(self, record: RequestRecord) -> None:
        """Queue the row without waiting (for requests nobody is waiting on any more)."""
        self._submit(self._row(record))

    def _submit(self, row: dict) -> Future:
        with self._lock:
            rows = [*self._backlog, row]
            self._backlog.clear()
        future = self.writer.submit(lambda db: db["requests"].insert_all(rows))
        future.add_done_callback(lambda done: self._settle(done, rows))
        return future

    def _settle(self, done: Future, rows: list[dict]) -> None:
        if done.exception() is None:
            if self._failing_since is not None:
                log.warning("request log writes resumed after %.0f s; %d rows dropped meanwhile",
                            time.monotonic() - self._failing_since, self.dropped)
                self._failing_since = None
            return
        with self._lock:
            self._backlog.extendleft(reversed(rows))  # before anything queued since, in request order
            while len(self._backlog) > self._max_backlog:
                self._backlog.popleft()
                self.dropped += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("the request log cannot be written (%s); keeping up to %d rows in memory until it can",
                        done.exception(), self._max_backlog)


def recent_requests(db: sqlite_utils.Database, limit: int = 20) -> list[dict]:
    rows = db.query("SELECT * FROM requests ORDER BY id DESC LIMIT ?", [limit])
    return [dict(row) for row in rows]


def recent_router_scores(db: sqlite_utils.Database, limit: int = 2000) -> list[float]:
    """The router's most recent scores, oldest first: its calibration survives a restart."""
    rows = db.query("SELECT router_score FROM requests WHERE router_score IS NOT NULL ORDER BY id DESC LIMIT ?",
                    [limit])
    return [row["router_score"] for row in rows][::-1]
