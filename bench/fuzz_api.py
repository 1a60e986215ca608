"""Schemathesis against a real daemon with a large example budget: no input may get a 5xx.

    python bench/fuzz_api.py [--max-examples 300] [--seed 1] [--cache]

Starts `localllm serve` on the default model (answers capped at 4 tokens, so a
generated request that passes validation costs little), runs `schemathesis run
http://127.0.0.1:PORT/openapi.json --checks not_a_server_error` with every phase
(examples, coverage, fuzzing), prints schemathesis's summary and whether the
daemon is still ready and its log free of tracebacks. The test suite runs the
same with 8 examples per operation (tests/daemon/test_openapi.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from localllm.config import DEFAULT_MODEL, load_settings
from localllm.daemon.http.server import resolve_model_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", action="store_true", help="with the semantic cache on (default off)")
    args = parser.parse_args()
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if schemathesis is None:
        raise SystemExit("schemathesis is not installed: pip install -e '.[test]'")
    model = resolve_model_file(load_settings().settings, DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as home:
        models = Path(home) / "data" / "models"
        models.mkdir(parents=True)
        os.symlink(model, models / model.name)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_SERVER_PORT": str(port),
               "LOCALLLM_ENGINE_DEFAULT_MAX_TOKENS": "4", "LOCALLLM_ENGINE_N_CTX": "512",
               "LOCALLLM_CACHE_ENABLED": "true" if args.cache else "false"}
        log_path = Path(home) / "daemon.log"
        with log_path.open("wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=home)
        try:
            deadline = time.monotonic() + 180
            while not ready(url):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not become ready:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)
            started = time.monotonic()
            result = subprocess.run([schemathesis, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                                     "--max-examples", str(args.max_examples), "--workers", "1", "--seed",
                                     str(args.seed)], cwd=home, env={**os.environ, "NO_COLOR": "1"})
            took = time.monotonic() - started
            still_ready = ready(url)
        finally:
            daemon.terminate()
            daemon.wait(60)
        tracebacks = log_path.read_text(errors="replace").count("Traceback")
    print(f"\nschemathesis exit {result.returncode} in {took:.0f} s, max {args.max_examples} examples per "
          f"operation; daemon still ready: {still_ready}; tracebacks in its log: {tracebacks}")
    return 0 if result.returncode == 0 and still_ready and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
