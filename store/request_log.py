"""The request log: one row per request, with no prompt text unless asked for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import sqlite_utils

from localllm.store.writer import StoreWriter


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
    prompt_text: str | None = None
    answer_text: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


class RequestLog:
    def __init__(self, writer: StoreWriter, *, log_prompts: bool = False):
        self.writer = writer
        self.log_prompts = log_prompts

    def _row(self, record: RequestRecord) -> dict:
        row = asdict(record)
        row["stream"] = int(record.stream)
        if not self.log_prompts:
            row["prompt_text"] = row["answer_text"] = None
        return row

    async def record(self, record: RequestRecord) -> None:
        """Write the row; returns once it is committed."""
        row = self._row(record)
        await self.writer.write(lambda db: db["requests"].insert(row))

    def record_soon(self, record: RequestRecord) -> None:
        """Queue the row without waiting (for requests nobody is waiting on any more)."""
        row = self._row(record)
        self.writer.submit(lambda db: db["requests"].insert(row))


def recent_requests(db: sqlite_utils.Database, limit: int = 20) -> list[dict]:
    rows = db.query("SELECT * FROM requests ORDER BY id DESC LIMIT ?", [limit])
    return [dict(row) for row in rows]


def recent_router_scores(db: sqlite_utils.Database, limit: int = 2000) -> list[float]:
    """The router's most recent scores, oldest first: its calibration survives a restart."""
    rows = db.query("SELECT router_score FROM requests WHERE router_score IS NOT NULL ORDER BY id DESC LIMIT ?",
                    [limit])
    return [row["router_score"] for row in rows][::-1]
