"""Soak: a real daemon under mixed load for a long time. Memory must level off, nothing may fail but
a full queue, and latency must not creep up.

    python bench/soak.py [--minutes 30] [--concurrency 16] [--window-minutes 5]

A `localllm serve` subprocess (default model, semantic cache on, n_parallel 4, queue 16, answers
capped at 24 tokens) with an on-prem upstream: the fake OpenAI-compatible server of the test suite,
which fails one request in five (HTTP 500, resets, stalls, truncated or malformed streams, 429s).
CONCURRENCY clients loop over a mix: new questions, repeated ones (cache hits), streams cut after
two chunks, embeddings, POST /v1/route, completions, and requests to the upstream.

Reports per window: requests, statuses, p50/p99 latency of whole answers, the daemon's resident
memory; then the memory growth from the end of the first window (warm-up) to the end, the 5xx other
than 503 queue_full (target: none), and how p99 moved (target: stable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from localllm.config import DEFAULT_MODEL, load_settings  # noqa: E402
from localllm.daemon.http.server import resolve_model_file  # noqa: E402
from tests.fallback.fake_upstream import FakeUpstream, Fault  # noqa: E402

FAULTS = [Fault("http_500"), Fault("reset"), Fault("reset", after_chunks=1), Fault("stall", delay_s=3,
          after_chunks=1), Fault("truncated", after_chunks=1), Fault("malformed_json", after_chunks=1),
          Fault("http_429", retry_after="1"), Fault("slow_first_byte", delay_s=2)]
TOPICS = ["rivers", "planets", "bread", "bridges", "owls", "volcanoes", "tea", "chess", "glass", "tides"]
ACTIONS = {"new": 25, "repeat": 15, "cut_stream": 15, "embed": 10, "route": 10, "complete": 10, "upstream": 15}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.server_errors: Counter = Counter()  # (action, status, code) of 5xx other than queue_full


async def one(session: aiohttp.ClientSession, url: str, action: str, rng: random.Random, tally: Tally) -> None:
    chat = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 24}
    topic = rng.choice(TOPICS)
    if action == "new":
        path, body = "/v1/chat/completions", {**chat, "messages": [
            {"role": "user", "content": f"Say something about {topic} number {rng.randrange(10**9)}."}]}
    elif action == "repeat":
        path, body = "/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": f"What are {topic}?"}]}
    elif action == "cut_stream":
        path, body = "/v1/chat/completions", {**chat, "stream": True, "max_tokens": 200, "messages": [
            {"role": "user", "content": f"Write a long essay on {topic} ({rng.randrange(10**6)})."}]}
    elif action == "embed":
        path, body = "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": [f"{topic} {i}" for i in range(4)]}
    elif action == "route":
        path, body = "/v1/route", {**chat, "messages": [{"role": "user", "content": f"Prove a theorem on {topic}."}]}
    elif action == "complete":
        path, body = "/v1/completions", {"model": DEFAULT_MODEL, "prompt": f"Once upon a time, {topic}",
                                         "max_tokens": 16, "temperature": 0.7}
    else:
        path, body = "/v1/chat/completions", {**chat, "model": "onprem", "messages": [
            {"role": "user", "content": f"Tell me about {topic} ({rng.randrange(10**6)})."}],
            "stream": rng.random() < 0.5}
    started = time.perf_counter()
    try:
        async with session.post(url + path, json=body) as response:
            if action == "cut_stream" and response.status == 200:
                for _ in range(2):
                    await response.content.readline()
                response.close()
            else:
                payload = await response.read()
                if response.status >= 500:
                    code = None
                    try:
                        code = json.loads(payload)["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    if code != "queue_full":
                        tally.server_errors[(action, response.status, code)] += 1
                if response.status == 200 and action != "cut_stream":
                    tally.latencies.append(time.perf_counter() - started)
            tally.statuses[response.status] += 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.statuses[type(exc).__name__] += 1


async def client(url: str, seed: int, deadline: float, windows: dict, window_s: float, start: float) -> None:
    rng = random.Random(seed)
    names, weights = zip(*ACTIONS.items(), strict=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            window = int((time.monotonic() - start) // window_s)
            await one(session, url, rng.choices(names, weights)[0], rng, windows[window])


async def faults(fake: FakeUpstream, deadline: float) -> None:
    rng = random.Random(7)
    while time.monotonic() < deadline:
        if len(fake.faults) < 2:
            fake.fail_next(rng.choice(FAULTS))
        await asyncio.sleep(rng.uniform(0.5, 3.0))


async def memory(process: psutil.Process, deadline: float, samples: list, start: float) -> None:
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
        await asyncio.sleep(5)


async def soak(args) -> int:
    fake = await FakeUpstream(text="On-prem answer in several words here.", chunk_delay_s=0.01).start()
    model = resolve_model_file(load_settings().settings, DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "data" / "models").mkdir(parents=True)
        os.symlink(model, Path(home) / "data" / "models" / model.name)
        (Path(home) / "config").mkdir()
        (Path(home) / "config" / "config.toml").write_text(
            '[[upstreams]]\nname = "onprem"\nkind = "openai-compatible"\ntrust = "onprem"\nmodel = "fake"\n'
            f'base_url = "{fake.openai_base_url}"\nfirst_byte_timeout_s = 2\ntimeout_s = 10\nmax_retries = 1\n')
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_SERVER_PORT": str(port),
               "LOCALLLM_ENGINE_N_PARALLEL": "4", "LOCALLLM_ENGINE_QUEUE_SIZE": "16",
               "LOCALLLM_ENGINE_N_CTX": "1024", "LOCALLLM_ENGINE_DEFAULT_MAX_TOKENS": "24"}
        log_path = Path(home) / "daemon.log"
        with log_path.open("wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=home)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(600):
                    try:
                        async with session.get(url + "/health") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
                else:
                    raise SystemExit("the daemon never became ready:\n" + log_path.read_text()[-3000:])
            start = time.monotonic()
            deadline = start + args.minutes * 60
            windows: dict[int, Tally] = defaultdict(Tally)
            samples: list[tuple[float, float]] = []
            window_s = args.window_minutes * 60
            await asyncio.gather(
                *(client(url, seed, deadline, windows, window_s, start) for seed in range(args.concurrency)),
                faults(fake, deadline), memory(psutil.Process(daemon.pid), deadline, samples, start))
        finally:
            daemon.terminate()
            daemon.wait(60)
            await fake.stop()
        tracebacks = log_path.read_text(errors="replace").count("Traceback")
    return report(windows, samples, window_s, tracebacks, args)


def report(windows: dict[int, Tally], samples: list, window_s: float, tracebacks: int, args) -> int:
    print(f"soak: {args.minutes} min, {args.concurrency} clients, windows of {args.window_minutes} min")
    print(f"{'window':>6} {'requests':>8} {'p50 s':>7} {'p99 s':>7} {'RSS MiB':>8}  statuses")
    p99s = []
    for index in sorted(windows):
        tally = windows[index]
        end = (index + 1) * window_s
        rss = max((mb for at, mb in samples if at <= end), default=float("nan"))
        lat = sorted(tally.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        p99s.append(p99)
        print(f"{index:>6} {sum(tally.statuses.values()):>8} {p50:7.2f} {p99:7.2f} {rss:8.0f}  "
              f"{dict(sorted(tally.statuses.items(), key=str))}")
    warm = [mb for at, mb in samples if at <= window_s]
    after = warm[-1] if warm else samples[0][1]
    final = samples[-1][1]
    growth = (final - after) / after
    errors = Counter()
    for tally in windows.values():
        errors.update(tally.server_errors)
    print(f"\nresident memory: {after:.0f} MiB after warm-up, {final:.0f} MiB at the end: {growth:+.1%} "
          f"(target < +10%)")
    print(f"5xx other than 503 queue_full: {sum(errors.values())} {dict(errors) or ''} (target 0)")
    print(f"p99 of whole answers by window: {', '.join(f'{p:.2f}' for p in p99s)} s")
    print(f"tracebacks in the daemon's log: {tracebacks}")
    return 0 if growth < 0.10 and not errors and tracebacks == 0 else 1


def main() -> int:
    # The fake upstream's own server logs the resets it is told to make; they are the point, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window-minutes", type=float, default=5)
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
