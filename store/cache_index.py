"""In-memory nearest-neighbour index over the cache, rebuilt from SQLite at start.

Entries are grouped by (namespace, scope), because a hit needs an exact scope
match anyway. Small groups are searched exactly with one matrix product; a
group that grows past ``ANN_THRESHOLD`` moves to a usearch HNSW graph so that
lookups stay in milliseconds at a million entries. The database stays the
source of truth: this holds only ids and vectors.

Not thread-safe: the semantic cache calls it from its one worker thread.
"""

from __future__ import annotations

import numpy as np

ANN_THRESHOLD = 4096


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

    def _to_ann(self) -> None:
        from usearch.index import Index

        self.ann = Index(ndim=self.dimensions, metric="ip", dtype="f16", connectivity=16,
                         expansion_add=128, expansion_search=64)
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
    def __init__(self, dimensions: int):
        self.dimensions = dimensions
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
