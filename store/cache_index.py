"""In-memory nearest-neighbour index over the cache, rebuilt from SQLite at start.

Entries are grouped by (namespace, scope), because a hit needs an exact scope
match anyway. Small groups are searched exactly with one matrix product; a
group that grows past ``ANN_THRESHOLD`` moves to a usearch HNSW graph so that
lookups stay in milliseconds at a million entries. The database stays the
source of truth: this holds only ids and vectors.

Not thread-safe: the semantic cache calls it from its one worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ANN_THRESHOLD = 4096
GRAPH_SETTINGS = {"metric": "ip", "dtype": "f16", "connectivity": 16, "expansion_add": 64, "expansion_search": 128}


def _usearch_index():
    # onnxruntime segfaults when imported after usearch (usearch 2.26, onnxruntime 1.31,
    # x86_64: `from usearch.index import Index; import onnxruntime` crashes). Whoever
    # imports usearch first therefore loads onnxruntime before it.
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    from usearch.index import Index

    return Index


def _restore(path: Path, entry_ids: np.ndarray):
    """The saved graph, if it is intact and holds exactly ``entry_ids``; else None (rebuild)."""
    Index = _usearch_index()

    if not path.exists():
        return None
    try:
        graph = Index.restore(str(path))
    except Exception:  # truncated or foreign file: the database is the truth, rebuild
        log.warning("saved cache graph %s is unreadable; rebuilding", path.name)
        return None
    if graph is None or len(graph) != len(entry_ids) or not bool(np.all(graph.contains(entry_ids))):
        return None
    graph.expansion_search = GRAPH_SETTINGS["expansion_search"]
    return graph


class _Group:
    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self.ids = np.empty(0, dtype=np.int64)
        self.vectors = np.empty((0, dimensions), dtype=np.float32)
        self.count = 0
        self.row_of: dict[int, int] = {}
        self.ann = None

    def add(self, entry_id: int, vector: np.ndarray) -> None:
        if self.ann is not None:
            self.ann.add(entry_id, vector)
            self.count += 1
            self.row_of[entry_id] = -1
            return
        if self.count == len(self.ids):
            capacity = max(16, 2 * len(self.ids))
            self.ids = np.resize(self.ids, capacity)
            grown = np.zeros((capacity, self.dimensions), dtype=np.float32)
            grown[: self.count] = self.vectors[: self.count]
            self.vectors = grown
        self.ids[self.count] = entry_id
        self.vectors[self.count] = vector
        self.row_of[entry_id] = self.count
        self.count += 1
        if self.count >= ANN_THRESHOLD:
            self._to_ann()

    def add_many(self, entry_ids: np.ndarray, vectors: np.ndarray, saved_graph: Path | None = None) -> None:
        """Bulk load (start-up): reuse the graph saved at the last shutdown when it holds
        exactly these entries; otherwise build it in one batch."""
        if self.count == 0 and saved_graph is not None and len(entry_ids) >= ANN_THRESHOLD:
            graph = _restore(saved_graph, entry_ids)
            if graph is not None:
                self.ann, self.count = graph, len(entry_ids)
                self.row_of = dict.fromkeys((int(i) for i in entry_ids), -1)
                return
        if self.count + len(entry_ids) < ANN_THRESHOLD or self.ann is not None:
            for entry_id, vector in zip(entry_ids, vectors):
                self.add(int(entry_id), vector)
            return
        self.ids = np.concatenate([self.ids[: self.count], entry_ids.astype(np.int64)])
        self.vectors = np.concatenate([self.vectors[: self.count], vectors.astype(np.float32)])
        self.count = len(self.ids)
        self.row_of = {int(entry_id): row for row, entry_id in enumerate(self.ids)}
        self._to_ann()

    def _to_ann(self) -> None:
        Index = _usearch_index()
        self.ann = Index(ndim=self.dimensions, **GRAPH_SETTINGS)
        self.ann.add(self.ids[: self.count].copy(), self.vectors[: self.count])
        self.row_of = dict.fromkeys(self.row_of, -1)
        self.ids = np.empty(0, dtype=np.int64)
        self.vectors = np.empty((0, self.dimensions), dtype=np.float32)

    def remove(self, entry_id: int) -> None:
        row = self.row_of.pop(entry_id, None)
        if row is None:
            return
        if self.ann is not None:
            self.ann.remove(entry_id)
            self.count -= 1
            return
        last = self.count - 1
        if row != last:  # move the last row into the hole
            moved = int(self.ids[last])
            self.ids[row] = moved
            self.vectors[row] = self.vectors[last]
            self.row_of[moved] = row
        self.count -= 1

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self.count == 0:
            return []
        if self.ann is not None:
            matches = self.ann.search(vector, min(k, self.count))
            # usearch's "ip" distance is 1 - dot product.
            return [(int(key), float(1.0 - distance)) for key, distance in zip(matches.keys, matches.distances,
                                                                                strict=True)]
        scores = self.vectors[: self.count] @ vector
        k = min(k, self.count)
        top = np.argpartition(scores, -k)[-k:] if self.count > k else np.arange(self.count)
        top = top[np.argsort(scores[top])[::-1]]
        return [(int(self.ids[i]), float(scores[i])) for i in top]


class CacheIndex:
    def __init__(self, dimensions: int, graph_dir: Path | None = None):
        self.dimensions = dimensions
        self.graph_dir = graph_dir  # where big groups' graphs are saved at shutdown
        self._groups: dict[tuple[str, str], _Group] = {}
        self._exact: dict[tuple[str, str, str], int] = {}
        self._where: dict[int, tuple[str, str, str]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, entry_id: int, namespace: str, scope: str, text_hash: str, vector: np.ndarray) -> None:
        group = self._groups.get((namespace, scope))
        if group is None:
            group = self._groups[(namespace, scope)] = _Group(self.dimensions)
        previous = self._exact.get((namespace, scope, text_hash))
        if previous is not None:  # a newer answer to the same question replaces the old one
            self.remove(previous)
        group.add(entry_id, vector)
        self._exact[(namespace, scope, text_hash)] = entry_id
        self._where[entry_id] = (namespace, scope, text_hash)

    def load(self, entry_ids: np.ndarray, namespaces: list[str], scopes: list[str], text_hashes: list[str],
             vectors: np.ndarray) -> None:
        """Bulk load rows read from SQLite (most recently used first; later duplicates lose)."""
        members: dict[tuple[str, str], list[int]] = {}
        for row, (entry_id, namespace, scope, text_hash) in enumerate(zip(entry_ids, namespaces, scopes,
                                                                            text_hashes)):
            key = (namespace, scope, text_hash)
            if key in self._exact:
                continue
            self._exact[key] = int(entry_id)
            self._where[int(entry_id)] = key
            members.setdefault((namespace, scope), []).append(row)
        for key, rows in members.items():
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(self.dimensions)
            group.add_many(entry_ids[rows], vectors[rows], self._graph_path(key))

    def _graph_path(self, key: tuple[str, str]) -> Path | None:
        if self.graph_dir is None:
            return None
        return self.graph_dir / (hashlib.sha256("\0".join(key).encode()).hexdigest()[:32] + ".usearch")

    def save_graphs(self) -> None:
        """Save every HNSW graph so the next start can skip rebuilding it (a derived
        cache: written to a temp name and renamed, checked against SQLite on load)."""
        if self.graph_dir is None:
            return
        self.graph_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for key, group in self._groups.items():
            if group.ann is None:
                continue
            path = self._graph_path(key)
            temporary = path.with_suffix(".partial")
            group.ann.save(str(temporary))
            os.replace(temporary, path)

    def remove(self, entry_id: int) -> None:
        where = self._where.pop(entry_id, None)
        if where is None:
            return
        namespace, scope, text_hash = where
        group = self._groups.get((namespace, scope))
        if group is not None:
            group.remove(entry_id)
            if group.count == 0:
                del self._groups[(namespace, scope)]
        if self._exact.get(where) == entry_id:
            del self._exact[where]

    def exact(self, namespace: str, scope: str, text_hash: str) -> int | None:
        return self._exact.get((namespace, scope, text_hash))

    def nearest(self, namespace: str, scope: str, vector: np.ndarray, k: int = 4) -> list[tuple[int, float]]:
        group = self._groups.get((namespace, scope))
        return group.search(vector, k) if group else []
