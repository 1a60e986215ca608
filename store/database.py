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
from localllm.errors import ConfigError
from localllm.store.migrations import MIGRATIONS

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
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        # WAL + NORMAL: a committed transaction survives a killed process (kill -9);
        # only a power cut can lose the last commits. FULL would fsync every commit.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        if migrate:
            _migrate(db)
    except sqlite3.Error as exc:
        raise ConfigError(f"Cannot open the database {path}: {exc}. If another localllm process is starting, "
                          "retry; otherwise check the file (PRAGMA integrity_check) and its permissions.") from None
    finally:
        os.umask(old_umask)
    return db


def _migrate(db: sqlite_utils.Database) -> None:
    """Apply pending migrations under one write lock, so two processes starting at
    once (a daemon and a CLI command) never both apply the same migration."""
    if not MIGRATIONS.pending(db):
        return
    db.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for the other process to finish
    try:
        MIGRATIONS.apply(db)  # each migration runs in a savepoint inside this transaction
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
