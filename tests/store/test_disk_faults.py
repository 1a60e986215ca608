"""The database's disk misbehaving: full (answers go on, rows wait and go in when space returns,
nothing is corrupted) and read-only (the daemon exits with one line naming the directory).
Real filesystems: small tmpfs mounts, which need root (CI runs as root)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

from localllm.config import DEFAULT_MODEL
from localllm.store.database import database_path, open_database
from tests.conftest import make_settings


def fill(folder) -> os.PathLike:
    """Write a file into ``folder`` until its filesystem is full."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        block = b"\0" * 65536
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def chat(client, question: str) -> int:
    response = await client.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 4,
        "temperature": 0})
    await response.read()
    return response.status


async def test_a_full_disk_loses_no_answer_and_no_row(make_client, open_test_services, mount_tmpfs, monkeypatch):
    home = mount_tmpfs("small-home", size="4m")
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    services = await open_test_services(make_settings(cache={"enabled": True}))
    client = await make_client(make_settings(cache={"enabled": True}), services=services)
    assert await chat(client, "Name a river.") == 200

    filler = fill(home)
    statuses = [await chat(client, f"Name a river in country number {i}.") for i in range(5)]
    assert statuses == [200] * 5  # answered, though nothing could be written
    assert services.request_log.backlog == 5 and services.request_log.dropped == 0

    filler.unlink()  # space returns
    assert await chat(client, "Name a mountain.") == 200
    assert services.request_log.backlog == 0
    db = open_database(database_path())
    assert db["requests"].count == 7  # every request, the ones from the full-disk minutes included
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_read_only_data_directory_stops_the_daemon_in_one_line(mount_tmpfs, models_dir):
    home = mount_tmpfs("read-only-home", read_only=True)
    env = {**os.environ, "LOCALLLM_HOME": str(home), "LOCALLLM_MODELS_DIR": str(models_dir),
           "LOCALLLM_SERVER_PORT": str(free_port()), "LOCALLLM_ENGINE_N_CTX": "512", "LOCALLLM_ENGINE_N_PARALLEL": "1"}
    result = subprocess.run([sys.executable, "-m", "localllm.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=180, cwd=home.parent)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Cannot create the database in " + str(home / "data")), result.stderr
    assert "Traceback" not in result.stderr
