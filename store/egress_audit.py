"""The egress audit: one row for every request that leaves the device.

Written and committed *before* the request is sent, so a crash mid-request
still leaves its trace. Holds what left and why, never the values: entity
types and counts that were redacted, and a hash of exactly what was sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import sqlite_utils

from localllm.store.writer import StoreWriter


def content_sha256(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class EgressRecord:
    upstream: str
    trust: str
    model: str
    action: str
    redacted: dict[str, int]
    content_sha256: str
    reason: str
    request_id: str | None = None
    namespace: str = "default"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


class EgressAudit:
    def __init__(self, writer: StoreWriter):
        self.writer = writer

    async def record(self, record: EgressRecord) -> None:
        """Returns once the row is committed."""
        row = asdict(record)
        row["redacted_count"] = sum(record.redacted.values())
        row["redacted"] = json.dumps(record.redacted, sort_keys=True)
        await self.writer.write(lambda db: db["egress_audit"].insert(row))


def recent_egress(db: sqlite_utils.Database, *, limit: int = 50, upstream: str | None = None,
                  since: str | None = None) -> list[dict]:
    where, params = [], []
    if upstream:
        where.append("upstream = ?")
        params.append(upstream)
    if since:
        where.append("created_at >= ?")
        params.append(since)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = db.query(f"SELECT * FROM egress_audit {clause} ORDER BY id DESC LIMIT ?", [*params, limit])
    out = []
    for row in rows:
        row = dict(row)
        row["redacted"] = json.loads(row["redacted"] or "{}")
        out.append(row)
    return out
