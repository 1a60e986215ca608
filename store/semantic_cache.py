"""The semantic cache: exact scope, then the same question asked again.

Lookup order: the exact normalised text (a dictionary lookup), then the nearest
cached questions in the same namespace and scope, each checked by the
duplicate verifier, which rejects pairs that differ in numbers, negation,
names and other decisive words. SQLite holds the entries; the in-memory index
is rebuilt from it at start. Index and read connection live on one worker
thread, so nothing here blocks the event loop or needs a lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localllm.config import CacheSettings
from localllm.store.cache_index import CacheIndex
from localllm.store.cache_keys import pack_vector, text_sha256, unpack_vector
from localllm.store.cache_verifier import DuplicateVerifier
from localllm.store.database import open_database
from localllm.store.writer import StoreWriter

log = logging.getLogger(__name__)

CANDIDATES = 4
EVICT_BATCH = 0.01  # evict 1% at a time, so eviction is rare and cheap


@dataclass(frozen=True)
class CachedAnswer:
    entry_id: int
    text: str
    finish_reason: str
    usage: dict
    similarity: float
    kind: str  # exact | semantic


@dataclass(frozen=True)
class SimilarLookup:
    """What a lookup by meaning found: the accepted answer, or none; ``rejected`` when a cached question
    was close enough to check but the verifier judged it a different question (the cache's safety at work,
    counted apart from a plain miss)."""

    hit: CachedAnswer | None = None
    rejected: bool = False


class SemanticCache:
    def __init__(self, db_path: Path, writer: StoreWriter, verifier: DuplicateVerifier, settings: CacheSettings,
                 dimensions: int):
        self.db_path = db_path
        self.writer = writer
        self.verifier = verifier
        self.settings = settings
        self.index = CacheIndex(dimensions, graph_dir=db_path.parent / "cache-graphs")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic-cache")
        self._db = None

    async def _on_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        await self._on_thread(self._load)

    def _load(self) -> None:
        self._db = open_database(self.db_path)
        oldest = time.time() - self.settings.ttl_s
        rows = self._db.execute(
            "SELECT id, namespace, scope_sha256, text_sha256, embedding FROM cache_entries "
            "WHERE created_at >= ? ORDER BY last_used_at DESC LIMIT ?", [oldest, self.settings.max_entries]).fetchall()
        if rows:
            ids, namespaces, scopes, hashes, blobs = zip(*rows)
            vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), self.index.dimensions)
            self.index.load(np.array(ids, dtype=np.int64), list(namespaces), list(scopes), list(hashes), vectors)
        log.info("semantic cache: %d entries loaded", len(rows))

    async def lookup_exact(self, namespace: str, scope: str, question: str, *, touch: bool = True
                           ) -> CachedAnswer | None:
        """The same question (after normalisation) in the same scope: no embedding needed.
        ``touch=False`` looks without counting a hit or refreshing recency (the explain endpoint)."""
        return await self._on_thread(self._lookup_exact, namespace, scope, question, touch)

    async def lookup_similar(self, namespace: str, scope: str, question: str, vector: np.ndarray, *,
                             touch: bool = True) -> SimilarLookup:
        """The nearest cached questions in the scope that the verifier accepts as the same question."""
        return await self._on_thread(self._lookup_similar, namespace, scope, question, vector, touch)

    def _lookup_exact(self, namespace: str, scope: str, question: str, touch: bool = True) -> CachedAnswer | None:
        now = time.time()
        exact_id = self.index.exact(namespace, scope, text_sha256(question))
        if exact_id is not None:
            row = self._row(exact_id)
            if row is not None and self._fresh(row, now):
                return self._hit(row, 1.0, "exact", now, touch)
        return None

    def _lookup_similar(self, namespace: str, scope: str, question: str, vector: np.ndarray,
                        touch: bool = True) -> SimilarLookup:
        now = time.time()
        candidates: list[tuple[dict, float]] = []
        for entry_id, approx in self.index.nearest(namespace, scope, vector, CANDIDATES):
            if approx < self.verifier.min_cosine - 0.02:  # f16 graph distances are approximate
                break
            row = self._row(entry_id)
            if row is None or not self._fresh(row, now):
                continue
            cosine = float(unpack_vector(row["embedding"]) @ vector)
            if cosine >= self.verifier.min_cosine:
                candidates.append((row, cosine))
        if not candidates:
            return SimilarLookup()
        # Every close candidate, not only the nearest: the same question is often the second neighbour.
        best = self.verifier.best_match([row["question"] for row, _ in candidates], question,
                                        [cosine for _, cosine in candidates])
        if best is None:
            return SimilarLookup(rejected=True)
        row, cosine = candidates[best[0]]
        return SimilarLookup(self._hit(row, cosine, "semantic", now, touch))

    def _row(self, entry_id: int) -> dict | None:
        rows = list(self._db.query("SELECT * FROM cache_entries WHERE id = ?", [entry_id]))
        if not rows:
            self.index.remove(entry_id)
            return None
        return rows[0]

    def _fresh(self, row: dict, now: float) -> bool:
        if row["created_at"] + self.settings.ttl_s >= now:
            return True
        self.index.remove(row["id"])
        self.writer.submit(lambda db, entry_id=row["id"]: db["cache_entries"].delete_where("id = ?", [entry_id]))
        return False

    def _hit(self, row: dict, similarity: float, kind: str, now: float, touch: bool) -> CachedAnswer:
        entry_id = row["id"]
        if touch:
            self.writer.submit(lambda db: db.execute(
                "UPDATE cache_entries SET last_used_at = ?, hits = hits + 1 WHERE id = ?", [now, entry_id]))
        answer = json.loads(row["answer"])
        return CachedAnswer(entry_id, answer["text"], answer["finish_reason"], answer["usage"], similarity, kind)

    async def store(self, namespace: str, scope: str, question: str, vector: np.ndarray, model: str,
                    text: str, finish_reason: str, usage: dict) -> int:
        now = time.time()
        row = {
            "namespace": namespace, "scope_sha256": scope, "text_sha256": text_sha256(question),
            "question": question, "embedding": pack_vector(vector), "model": model,
            "answer": json.dumps({"text": text, "finish_reason": finish_reason, "usage": usage}),
            "created_at": now, "last_used_at": now, "hits": 0,
        }
        text_hash = row["text_sha256"]

        def insert(db) -> int:
            # A newer answer to the very same question replaces the older one.
            db["cache_entries"].delete_where("namespace = ? AND scope_sha256 = ? AND text_sha256 = ?",
                                             [namespace, scope, text_hash])
            return db["cache_entries"].insert(row).last_pk

        entry_id = await self.writer.write(insert)
        await self._on_thread(self._add_and_evict, entry_id, namespace, scope, text_hash, vector)
        return entry_id

    def _add_and_evict(self, entry_id: int, namespace: str, scope: str, text_hash: str, vector: np.ndarray) -> None:
        self.index.add(entry_id, namespace, scope, text_hash, vector)
        excess = len(self.index) - self.settings.max_entries
        if excess <= 0:
            return
        count = max(excess, int(self.settings.max_entries * EVICT_BATCH))
        victims = [row["id"] for row in self._db.query(
            "SELECT id FROM cache_entries ORDER BY last_used_at ASC, id ASC LIMIT ?", [count])]
        for victim in victims:
            self.index.remove(victim)
        self.writer.submit(lambda db: db.execute(
            f"DELETE FROM cache_entries WHERE id IN ({','.join('?' * len(victims))})", victims))
        log.info("semantic cache: evicted %d least recently used entries", len(victims))

    async def clear(self, namespace: str | None = None, model: str | None = None) -> int:
        clause, params = entry_filter(namespace, model)

        def delete(db) -> list[int]:
            ids = [row["id"] for row in db.query(f"SELECT id FROM cache_entries WHERE {clause}", params)]
            db.execute(f"DELETE FROM cache_entries WHERE {clause}", params)
            return ids

        removed = await self.writer.write(delete)

        def drop() -> None:
            for entry_id in removed:
                self.index.remove(entry_id)

        await self._on_thread(drop)
        return len(removed)

    async def close(self) -> None:
        def shut() -> None:
            try:
                self.index.save_graphs()
            except OSError as exc:  # only costs a rebuild at the next start
                log.warning("could not save the cache graphs: %s", exc)
            if self._db is not None:
                self._db.conn.close()

        await self._on_thread(shut)
        self._thread.shutdown(wait=True)


def entry_filter(namespace: str | None = None, model: str | None = None) -> tuple[str, list]:
    """A WHERE clause (and its parameters) for the entries of a namespace and/or model; all when both are None."""
    where, params = [], []
    if namespace is not None:
        where.append("namespace = ?")
        params.append(namespace)
    if model is not None:
        where.append("model = ?")
        params.append(model)
    return " AND ".join(where) or "1", params


def cache_stats(db) -> list[dict]:
    """Entries, hits and size per namespace and model (for `localllm cache stats`)."""
    return [dict(row) for row in db.query(
        "SELECT namespace, model, COUNT(*) AS entries, SUM(hits) AS hits, "
        "SUM(LENGTH(answer) + LENGTH(question) + LENGTH(embedding)) AS bytes, "
        "MIN(created_at) AS oldest, MAX(last_used_at) AS last_used FROM cache_entries "
        "GROUP BY namespace, model ORDER BY namespace, model")]
