"""The one SQLite database: opened through sqlite-utils, private, WAL, migrated.

One connection per thread: the daemon's store writer owns one; readers (CLI
commands, start-up loads) open their own.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from localllm import paths

from .migrations import MIGRATIONS

DATABASE_NAME = "localllm.db"


def database_path() -> Path:
    return paths.data_dir() / DATABASE_NAME


def _create_private(path: Path) -> None:
    """Create the file (and its directory) readable by this user only, before SQLite opens it."""
    paths.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def open_database(path: Path | None = None, *, migrate: bool = True) -> sqlite_utils.Database:
    path = path or database_path()
    if not path.exists():
        _create_private(path)
    # Prompts may live here; WAL and journal side files inherit this umask.
    old_umask = os.umask(0o077)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA busy_timeout = 10000")
        db.enable_wal()
        # WAL + NORMAL: a committed transaction survives a killed process (kill -9);
        # only a power cut can lose the last commits. FULL would fsync every commit.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        if migrate:
            MIGRATIONS.apply(db)
    finally:
        os.umask(old_umask)
    return db
