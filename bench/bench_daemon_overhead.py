"""What the daemon costs over calling llama-cpp-python directly.

Side by side in one run, on the same model file and thread count, 128-token
greedy answers, alternating the two so machine noise hits both alike:

  in-process  llama_cpp.Llama.create_chat_completion(stream=True), which reuses the
              previous prompt's KV cache for a shared prefix (the chat template's
              system prompt here)
  in-process fresh  the same after Llama.reset(): the whole prompt evaluated, as the
              daemon does so that greedy answers never depend on the previous request
  daemon      a real `localllm serve` subprocess, streamed over HTTP (SSE), cache off
  daemon+cache  the same with the semantic cache on: every request is a miss, so
              it also pays for embedding the question and the lookup

Reports decode tokens/s and time to first token (median of N) and the ratios
the foundation issue targets: daemon >= 0.95x tokens/s, <= 10 ms added TTFT.

    python bench/bench_daemon_overhead.py [--runs 7] [--threads 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from localllm.config import DEFAULT_MODEL, load_settings
from localllm.daemon.http.server import resolve_model_file

PROMPT = "Request {i}. Write a long, detailed story about a robot who learns to paint. Use many sentences."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_in_process(llm, i: int, tokens: int, *, fresh: bool = False) -> tuple[float, float, int]:
    if fresh:
        llm.reset()  # evaluate the whole prompt, as the daemon does (no reuse of the last request's KV)
    started = time.perf_counter()
    first = last = None
    count = 0
    for chunk in llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT.format(i=i)}], max_tokens=tokens,
            temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            count += 1
    return first - started, last - first, count


async def run_daemon(url: str, i: int, tokens: int) -> tuple[float, float, int]:
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
            "max_tokens": tokens, "temperature": 0, "stream": True}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        first = last = None
        count = 0
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    last = time.perf_counter()
                    first = first or last
                    count += 1
    return first - started, last - first, count


def wait_healthy(url: str, daemon: subprocess.Popen) -> None:
    """Until the model is loaded and, when the cache is on, the cache has warmed up."""
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit("daemon exited: " + daemon.stderr.read().decode())
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200 and json.loads(response.read())["cache"] in ("on", "off"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("daemon never became healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()

    from llama_cpp import Llama

    settings = load_settings().settings
    model_path = resolve_model_file(settings, DEFAULT_MODEL)
    llm = Llama(model_path=str(model_path), n_ctx=args.n_ctx, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)

    results: dict[str, list[tuple[float, float, int]]] = {"in-process": [], "in-process fresh": []}
    daemons = {}
    with tempfile.TemporaryDirectory() as home:
        models = Path(home) / "data" / "models"
        models.mkdir(parents=True)
        os.symlink(model_path, models / model_path.name)
        try:
            # The engine's own overhead (cache off), and the cache-miss path, which
            # also embeds the question and searches the cache before generating.
            for name, cache_on in (("daemon", "false"), ("daemon+cache", "true")):
                port = free_port()
                env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_SERVER_PORT": str(port),
                       "LOCALLLM_ENGINE_N_THREADS": str(args.threads), "LOCALLLM_ENGINE_N_CTX": str(args.n_ctx),
                       "LOCALLLM_CACHE_ENABLED": cache_on}
                process = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                daemons[name] = (f"http://127.0.0.1:{port}", process)
                results[name] = []
            for url, process in daemons.values():
                wait_healthy(url, process)
            run_in_process(llm, -1, 8)  # warm everything up once
            for url, _ in daemons.values():
                asyncio.run(run_daemon(url, -1, 8))
            for i in range(args.runs):
                results["in-process"].append(run_in_process(llm, i, args.tokens))
                results["in-process fresh"].append(run_in_process(llm, i, args.tokens, fresh=True))
                for name, (url, _) in daemons.items():
                    results[name].append(asyncio.run(run_daemon(url, i, args.tokens)))
        finally:
            for _, process in daemons.values():
                process.terminate()
                process.wait(30)

    summary = {}
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows)
        tps = statistics.median((r[2] - 1) / r[1] for r in rows if r[1] > 0)
        tokens = statistics.median(r[2] for r in rows)
        summary[name] = (ttft, tps)
        print(f"{name:<17} tokens/answer {tokens:5.0f}  decode {tps:7.1f} tok/s  first token {ttft * 1000:7.1f} ms")
    for name in daemons:
        for baseline in ("in-process", "in-process fresh"):
            ratio = summary[name][1] / summary[baseline][1]
            added_ms = (summary[name][0] - summary[baseline][0]) * 1000
            print(f"{name} vs {baseline}: tokens/s {ratio:.3f}x (target >= 0.95x), "
                  f"first token {added_ms:+.1f} ms (target <= 10 ms)")
    print(f"model {model_path.name}, threads {args.threads}, {args.runs} runs each, {args.tokens}-token answers")


if __name__ == "__main__":
    main()
