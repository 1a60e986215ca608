"""The store's single writer: one thread, one connection, group commits.

Callers hand it small write functions and await them; each resolves only after
its transaction has committed, so "acknowledged" means "on disk, survives a
killed process". Writes queued while a commit runs are committed together.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import sqlite_utils

from localllm.store.database import open_database

log = logging.getLogger(__name__)

WriteFn = Callable[[sqlite_utils.Database], Any]
_STOP = object()
MAX_BATCH = 256


class StoreWriter:
    def __init__(self, path: Path):
        self.path = path
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()
            self._opened.wait()
            if self._open_error is not None:
                raise self._open_error

    def submit(self, fn: WriteFn) -> Future:
        """Queue ``fn(db)``; the returned future resolves after the commit."""
        future: Future = Future()
        self._queue.put((fn, future))
        return future

    async def write(self, fn: WriteFn) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def _run(self) -> None:
        try:
            db = open_database(self.path, set_aside_if_corrupt=True)
        except BaseException as exc:  # surfaced to start()'s caller
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(db, batch)
        db.conn.close()

    def _commit(self, db: sqlite_utils.Database, batch: list) -> None:
        results: list[tuple[Future, Any, BaseException | None]] = []
        try:
            with db.atomic():
                for fn, future in batch:
                    try:
                        with db.atomic():  # a savepoint: one bad write doesn't sink the batch
                            results.append((future, fn(db), None))
                    except Exception as exc:
                        results.append((future, None, exc))
        except Exception as exc:  # the commit itself failed (disk full, I/O error): callers decide
            log.debug("store commit failed: %s", exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, value, error in results:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
