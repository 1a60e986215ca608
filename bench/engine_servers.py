"""Start and stop the three servers that bench/engine_throughput.py compares.

Each runs as a subprocess on 127.0.0.1 and a free port, on the same GGUF file,
thread count, per-sequence context and batch size; its log goes to a file in
the run's temporary directory (a pipe nobody reads would stall a chatty server).

  localllm          `localllm serve` with a throwaway LOCALLLM_HOME, semantic cache off,
                    engine.n_parallel sequences (LOCALLLM_ENGINE_N_PARALLEL); its KV cache is
                    q8_0 with flash attention unless --kv-cache-type says otherwise
  llama-server      llama.cpp's server built by llama_cpp_build.py: -np N slots and
                    -c N x n_ctx (its -c is the total over the slots); with an explicit
                    -np its KV cache is not unified (--kv-unified is on only for -np auto),
                    f16 KV cache with flash attention 'auto' (on, on CPU) by default
  llama-cpp-python  `python -m llama_cpp.server`: one context, one request at a time;
                    --interrupt_requests false, or a waiting request would cut the
                    running stream short after its next token; f16 KV cache and, unlike
                    the other two, flash attention off by default

--kv-cache-type f16|q8_0 gives all three that KV precision with flash attention on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from localllm.config import DEFAULT_MODEL

SERVER_NAMES = ("localllm", "llama-server", "llama-cpp-python")
# An earlier localllm, installed in another environment (--baseline-python): A/B of a change, same run.
BASELINE = "localllm-baseline"


@dataclass(frozen=True)
class ServerOptions:
    model_path: Path
    threads: int
    n_ctx: int  # per sequence
    n_batch: int
    n_parallel: int  # localllm and llama-server; 0 leaves localllm's engine.n_parallel unset
    llama_server: Path | None = None
    llama_server_args: tuple[str, ...] = ()
    kv_cache_type: str | None = None  # "f16" | "q8_0" for all three; None: each server's default
    localllm_env: tuple[tuple[str, str], ...] = ()  # extra LOCALLLM_* settings, applied last
    baseline_python: Path | None = None  # the python of an environment with another localllm installed


# ggml type ids for llama-cpp-python's --type_k/--type_v
_GGML_TYPES = {"f16": 1, "q8_0": 8}


@dataclass
class RunningServer:
    name: str
    url: str
    model: str  # what requests put in "model"
    process: subprocess.Popen
    log_path: Path
    command: list[str]
    settings: dict = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(name: str, command: list[str], workdir: Path, *, model: str, port: int, settings: dict,
            env: dict | None = None, cwd: Path | None = None) -> RunningServer:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=cwd)
    return RunningServer(name, f"http://127.0.0.1:{port}", model, process, log_path, command, settings)


def start_localllm(options: ServerOptions, workdir: Path, *, name: str = "localllm",
                   python: str = sys.executable) -> RunningServer:
    home = workdir / f"{name}-home"
    models = home / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / options.model_path.name
    if not link.exists():
        os.symlink(options.model_path, link)
    port = free_port()
    settings = {"LOCALLLM_ENGINE_N_THREADS": str(options.threads), "LOCALLLM_ENGINE_N_CTX": str(options.n_ctx),
                "LOCALLLM_ENGINE_N_BATCH": str(options.n_batch), "LOCALLLM_CACHE_ENABLED": "false"}
    if options.n_parallel:
        settings["LOCALLLM_ENGINE_N_PARALLEL"] = str(options.n_parallel)
    if options.kv_cache_type:
        settings["LOCALLLM_ENGINE_KV_CACHE_TYPE"] = options.kv_cache_type
    settings.update(options.localllm_env)
    env = {**os.environ, "LOCALLLM_HOME": str(home), "LOCALLLM_SERVER_PORT": str(port), **settings}
    # Started outside the repository, so that `python -m localllm.cli` finds the environment's own install.
    return _launch(name, [python, "-m", "localllm.cli", "serve"], workdir, model=DEFAULT_MODEL,
                   port=port, settings=settings, env=env, cwd=workdir)


def start_localllm_baseline(options: ServerOptions, workdir: Path) -> RunningServer:
    if options.baseline_python is None:
        raise SystemExit(f"{BASELINE} needs --baseline-python: the python of an environment where the localllm "
                         "to compare with is installed (pip install <its checkout>)")
    return start_localllm(options, workdir, name=BASELINE, python=str(options.baseline_python))


def start_llama_server(options: ServerOptions, workdir: Path) -> RunningServer:
    if options.llama_server is None:
        raise SystemExit("llama-server was not built: run without --skip-build, or build it with "
                         "`python bench/llama_cpp_build.py`")
    port = free_port()
    args = ["-m", str(options.model_path), "-np", str(options.n_parallel or 1),
            "-c", str(options.n_ctx * (options.n_parallel or 1)), "-t", str(options.threads),
            "-tb", str(options.threads), "-b", str(options.n_batch), "-ub", str(options.n_batch),
            "--host", "127.0.0.1", "--port", str(port)]
    if options.kv_cache_type:
        # flash attention on, as localllm has it (q8_0: always; f16: llama.cpp's 'auto' picks it on CPU)
        args += ["-ctk", options.kv_cache_type, "-ctv", options.kv_cache_type, "-fa", "on"]
    args += options.llama_server_args
    return _launch("llama-server", [str(options.llama_server), *args], workdir, model="default", port=port,
                   settings={"args": " ".join(args[2:])})


def start_llama_cpp_python(options: ServerOptions, workdir: Path) -> RunningServer:
    port = free_port()
    args = ["--model", str(options.model_path), "--n_ctx", str(options.n_ctx), "--n_threads", str(options.threads),
            "--n_threads_batch", str(options.threads), "--n_batch", str(options.n_batch),
            "--interrupt_requests", "false", "--host", "127.0.0.1", "--port", str(port)]
    if options.kv_cache_type:
        kv_type = str(_GGML_TYPES[options.kv_cache_type])
        args += ["--type_k", kv_type, "--type_v", kv_type, "--flash_attn", "true"]
    return _launch("llama-cpp-python", [sys.executable, "-m", "llama_cpp.server", *args], workdir,
                   model="default", port=port, settings={"args": " ".join(args[2:])})


STARTERS = {"localllm": start_localllm, "llama-server": start_llama_server,
            "llama-cpp-python": start_llama_cpp_python, BASELINE: start_localllm_baseline}


def _ready(server: RunningServer) -> bool:
    """localllm: /health says the cache has settled; llama-server: /health is 200 once the
    model is loaded; llama-cpp-python: /v1/models answers once its app is up."""
    path = "/v1/models" if server.name == "llama-cpp-python" else "/health"
    try:
        with urllib.request.urlopen(server.url + path, timeout=1) as response:
            if response.status != 200:
                return False
            if server.name in ("localllm", BASELINE):
                return json.loads(response.read()).get("cache") in ("on", "off")
            return True
    except (OSError, ValueError):
        return False


def wait_ready(servers: list[RunningServer], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.process.poll() is not None:
                raise SystemExit(f"{server.name} exited with {server.process.returncode}:\n"
                                 f"$ {' '.join(server.command)}\n{server.log_tail()}")
            if _ready(server):
                waiting.remove(server)
        if time.monotonic() > deadline:
            raise SystemExit(f"{', '.join(s.name for s in waiting)} never became ready; log tail:\n"
                             + "\n".join(s.log_tail() for s in waiting))
        time.sleep(0.2)


def version_of(name: str, options: ServerOptions) -> str:
    if name == "llama-server" and options.llama_server is not None:
        result = subprocess.run([str(options.llama_server), "--version"], capture_output=True, text=True)
        return (result.stdout + result.stderr).strip().splitlines()[0] if result.returncode == 0 else "?"
    import importlib.metadata

    if name == BASELINE and options.baseline_python is not None:
        result = subprocess.run([str(options.baseline_python), "-c", "import importlib.metadata as m; "
                                 "print(m.version('localllm'))"], capture_output=True, text=True)
        return f"{result.stdout.strip() or '?'} ({options.baseline_python})"
    if name != "localllm":
        return importlib.metadata.version("llama_cpp_python")
    repo = Path(__file__).resolve().parent.parent
    rev = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return f"{importlib.metadata.version('localllm')} ({rev.stdout.strip() or 'no git'})"
