"""The SQLite file: private, WAL, and migrated from empty or from any earlier version."""

from __future__ import annotations

import stat

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.store.database import database_path, open_database
from localllm.store.migrations import MIGRATIONS


def test_new_database_is_private_and_in_wal_mode(localllm_home):
    db = open_database()
    path = database_path()
    assert path.parent == localllm_home / "data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db["requests"].insert({"created_at": "now", "status": 200})
    wal = path.with_name(path.name + "-wal")
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_all_migrations_apply_from_empty(tmp_path):
    db = open_database(tmp_path / "x.db")
    assert {m.name for m in MIGRATIONS.applied(db)} == {m.name for m in MIGRATIONS._migrations}
    assert {"requests", "cache_entries"} <= set(db.table_names())
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("stop_before", [m.name for m in MIGRATIONS._migrations])
def test_upgrade_from_each_earlier_version_keeps_rows(tmp_path, stop_before):
    path = tmp_path / "old.db"
    old = open_database(path, migrate=False)
    MIGRATIONS.apply(old, stop_before=stop_before)
    if "requests" in old.table_names():
        old["requests"].insert({"created_at": "2026-01-01T00:00:00", "status": 200, "model": "m"})
    old.conn.close()
    upgraded = open_database(path)
    assert not MIGRATIONS.pending(upgraded)
    if stop_before != MIGRATIONS._migrations[0].name:
        assert upgraded["requests"].count == 1
    # Opening again is a no-op.
    again = open_database(path)
    assert len(MIGRATIONS.applied(again)) == len(MIGRATIONS._migrations)


def test_failed_migration_rolls_back(tmp_path):
    from sqlite_utils.migrations import Migrations

    broken = Migrations("broken-test")

    @broken(name="0001_half_done")
    def half_done(db):
        db["t"].create({"id": int}, pk="id")
        raise RuntimeError("boom")

    db = open_database(tmp_path / "y.db")
    with pytest.raises(RuntimeError):
        broken.apply(db)
    assert "t" not in db.table_names()
    assert broken.pending(db)


def test_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path):
    import subprocess
    import sys
    import time

    path = tmp_path / "race.db"
    start_at = time.time() + 3  # all processes open the file at the same moment, after their imports
    code = ("import time, pathlib; from localllm.store.database import open_database; "
            f"time.sleep(max(0, {start_at} - time.time())); open_database(pathlib.Path({str(path)!r}))")
    processes = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    db = open_database(path)
    assert len(MIGRATIONS.applied(db)) == len(MIGRATIONS._migrations)


async def test_a_corrupt_database_is_set_aside_and_the_daemon_serves(make_client, caplog):
    """The daemon's writer moves a damaged file aside (kept, never deleted) and starts a fresh one;
    a reader (a CLI command) says what is wrong and leaves the file alone."""
    from localllm.errors import ConfigError

    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not a database at all " * 200
    path.write_bytes(garbage)
    with pytest.raises(ConfigError, match="corrupt"):
        open_database()
    assert path.read_bytes() == garbage

    client = await make_client()
    answered = await client.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert answered.status == 200
    aside = list(path.parent.glob("localllm.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert open_database()["requests"].count == 1
    warning = next(r.getMessage() for r in caplog.records if "corrupt" in r.getMessage())
    assert str(aside[0]) in warning and ".recover" in warning
