"""kill -9 the daemon under load: the database opens cleanly and holds every acknowledged request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.store.database import database_path, open_database
from tests.daemon.test_server import free_port


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_request(models_dir, localllm_home):
    port = free_port()
    env = {**os.environ, "LOCALLLM_HOME": str(localllm_home), "LOCALLLM_SERVER_PORT": str(port),
           "LOCALLLM_ENGINE_N_CTX": "512", "LOCALLLM_ENGINE_N_THREADS": "1", "LOCALLLM_CACHE_ENABLED": "false"}
    daemon = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert daemon.poll() is None, daemon.stderr.read().decode()
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)

    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                answer = _post(base + "/v1/completions", {"model": DEFAULT_MODEL, "prompt": f"client {n} req {i}",
                                                          "max_tokens": 1, "temperature": 0})
            except OSError:
                return  # the daemon is gone
            with lock:
                acknowledged.append(answer["id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    while True:
        with lock:
            if len(acknowledged) >= 40:
                break
        assert daemon.poll() is None
        time.sleep(0.01)
    daemon.send_signal(signal.SIGKILL)  # in the middle of the load
    daemon.wait(10)
    stop.set()
    for thread in threads:
        thread.join(30)

    db = open_database(database_path())
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logged = {row["request_id"] for row in db.query("SELECT request_id FROM requests WHERE status = 200")}
    missing = set(acknowledged) - logged
    assert not missing, f"{len(missing)} acknowledged requests were not logged"
    assert len(logged) >= len(acknowledged)
