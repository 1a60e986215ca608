"""The one SQLite database: opened through sqlite-utils, private, WAL, migrated.

One connection per thread: the daemon's store writer owns one; readers (CLI
commands, start-up loads) open their own.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from localllm import paths
from localllm.errors import ConfigError
from localllm.store.migrations import MIGRATIONS

DATABASE_NAME = "localllm.db"

log = logging.getLogger(__name__)


def database_path() -> Path:
    return paths.data_dir() / DATABASE_NAME


def _create_private(path: Path) -> None:
    """Create the file (and its directory) readable by this user only, before SQLite opens it."""
    try:
        paths.ensure_private_dir(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise ConfigError(f"Cannot create the database in {path.parent}: {exc.strerror}. The data directory must "
                          "be writable by the user running localllm: fix its permissions, or point LOCALLLM_HOME "
                          "elsewhere.") from None
    os.close(fd)


def open_database(path: Path | None = None, *, migrate: bool = True,
                  set_aside_if_corrupt: bool = False) -> sqlite_utils.Database:
    """Open (creating, privately) and migrate the database.

    ``set_aside_if_corrupt`` (the daemon's writer): a file SQLite cannot read as a database is renamed
    ``<name>.corrupt-<UTC time>``, kept, and a fresh database takes its place, so the daemon still serves;
    the log says where the old file is and how to recover its rows."""
    path = path or database_path()
    try:
        return _open(path, migrate)
    except _Corrupt as corrupt:
        if not set_aside_if_corrupt:
            raise ConfigError(f"The database {path} is corrupt ({corrupt.detail}). Start the daemon to set it "
                              "aside and begin a fresh one, or restore it from a backup.") from None
        aside = set_aside(path)
        log.warning("the database %s was corrupt (%s): moved it to %s and started a fresh one. To recover its "
                    "rows: sqlite3 %s .recover | sqlite3 recovered.db", path, corrupt.detail, aside, aside)
        return _open(path, migrate)


class _Corrupt(Exception):
    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _open(path: Path, migrate: bool) -> sqlite_utils.Database:
    if not path.exists():
        _create_private(path)
    # Prompts may live here; WAL and journal side files inherit this umask.
    old_umask = os.umask(0o077)
    conn = None
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
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if _is_corruption(exc):
            raise _Corrupt(str(exc)) from None
        raise ConfigError(f"Cannot open the database {path}: {exc}. If another localllm process is starting, "
                          "retry; otherwise check the file (PRAGMA integrity_check) and its permissions.") from None
    finally:
        os.umask(old_umask)
    return db


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Damage to the file itself, as opposed to a lock, a permission or a full disk."""
    if isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(exc) or "malformed" in str(exc)


def set_aside(path: Path) -> Path:
    """Rename the database (and its WAL and shared-memory files) to ``<name>.corrupt-<UTC time>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while aside.exists():
        suffix += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
    os.replace(path, aside)
    for side in ("-wal", "-shm"):
        extra = Path(str(path) + side)
        if extra.exists():
            os.replace(extra, Path(str(aside) + side))
    return aside


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
