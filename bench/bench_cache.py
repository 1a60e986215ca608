"""Semantic cache speed: embedding cost, lookup latency at scale, end-to-end hit latency.

    python bench/bench_cache.py [--sizes 100000 1000000] [--lookups 500] [--skip-e2e]

- embedding: p50 for a ~30-token and a ~1,000-token prompt (truncated to the
  model's 256-token window), for both backends, computed (not memoised) and memoised.
- lookup: SemanticCache.lookup_similar (index search + SQLite row fetch + verifier) in
  one scope holding N synthetic entries, p50/p99; also the time to rebuild the
  index from SQLite at start. Vectors are random unit vectors (the hardest case
  for the HNSW graph); queries are stored vectors plus noise.
- e2e: a real `localllm serve` subprocess; one miss, then repeated identical
  requests through HTTP (cache hits): p50/p99 versus the miss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon_overhead import free_port, wait_healthy  # noqa: E402

from localllm.config import DEFAULT_MODEL, CacheSettings, load_settings  # noqa: E402
from localllm.daemon.http.server import resolve_model_file
from localllm.store.cache_keys import pack_vector  # noqa: E402
from localllm.store.cache_verifier import DuplicateVerifier  # noqa: E402
from localllm.store.database import open_database  # noqa: E402
from localllm.store.embedder import load_embedder  # noqa: E402
from localllm.store.semantic_cache import SemanticCache  # noqa: E402
from localllm.store.writer import StoreWriter  # noqa: E402

SHORT = "How do I configure the backup schedule on the line controller for the night shift?"  # ~20 words


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_embedding(runs: int) -> None:
    long = " ".join(f"sensor {i} reported a pressure drop near valve {i % 17} during the night" for i in range(90))
    for backend in ("sentence-transformers", "onnx"):
        embedder = load_embedder(backend)
        inner = embedder.inner
        for label, text in (("30-token", SHORT), ("1000-token", long)):
            tokens = len(inner._tokenizer.encode(text).ids) if backend == "onnx" else None
            inner.embed([text])  # warm up
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                inner.embed([text])
                times.append((time.perf_counter() - started) * 1000)
            memo = []
            embedder.embed([text])
            for _ in range(runs):
                started = time.perf_counter()
                embedder.embed([text])
                memo.append((time.perf_counter() - started) * 1000)
            note = f" ({tokens} tokens after truncation to the window)" if tokens else ""
            print(f"embed {backend:<21} {label:<10} p50 {statistics.median(times):6.2f} ms  "
                  f"memoised p50 {statistics.median(memo):6.3f} ms{note}")


def fill_database(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    db = open_database(path)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = time.time()
    answer = json.dumps({"text": "cached answer", "finish_reason": "stop",
                         "usage": {"prompt_tokens": 10, "completion_tokens": 3}})
    batch = 50_000
    for start in range(0, n, batch):
        rows = [("default", "scope", f"{i:064x}", f"synthetic question number {i}", pack_vector(vectors[i]),
                 answer, "m", now, now, 0) for i in range(start, min(n, start + batch))]
        with db.atomic():
            db.conn.executemany(
                "INSERT INTO cache_entries (namespace, scope_sha256, text_sha256, question, embedding, answer, model, "
                "created_at, last_used_at, hits) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.conn.close()
    return vectors


async def bench_lookup(n: int, lookups: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.db"
        started = time.perf_counter()
        vectors = fill_database(path, n, rng)
        filled = time.perf_counter() - started
        writer = StoreWriter(path)
        writer.start()
        cache = SemanticCache(path, writer, DuplicateVerifier.load_default(),
                              CacheSettings(max_entries=max(n, 1)), 384)
        started = time.perf_counter()
        await cache.open()
        rebuilt = time.perf_counter() - started
        times = []
        hits = 0
        for i in rng.integers(0, n, lookups):
            query = vectors[i] + rng.normal(scale=0.01, size=384).astype(np.float32)
            query /= np.linalg.norm(query)
            started = time.perf_counter()
            hit = await cache.lookup_similar("default", "scope", f"synthetic question number {i}?", query)
            times.append((time.perf_counter() - started) * 1000)
            hits += hit is not None
        await cache.close()  # saves the graph
        restarted = SemanticCache(path, writer, DuplicateVerifier.load_default(),
                                  CacheSettings(max_entries=max(n, 1)), 384)
        started = time.perf_counter()
        await restarted.open()
        reopened = time.perf_counter() - started
        await restarted.close()
        writer.stop()
    print(f"lookup {n:>9,} entries  p50 {percentile(times, 50):6.2f} ms  p99 {percentile(times, 99):6.2f} ms  "
          f"hits {hits}/{lookups}  (start: index built from SQLite in {rebuilt:.1f} s, "
          f"{reopened:.1f} s with the saved graph; filled in {filled:.1f} s)")


async def bench_e2e(requests: int) -> None:
    import aiohttp

    settings = load_settings().settings
    model_path = resolve_model_file(settings, DEFAULT_MODEL)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        models = Path(home) / "data" / "models"
        models.mkdir(parents=True)
        os.symlink(model_path, models / model_path.name)
        env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_SERVER_PORT": str(port)}
        daemon = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_healthy(url, daemon)
            body = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 64,
                    "messages": [{"role": "user", "content": SHORT}]}
            async with aiohttp.ClientSession() as session:
                async def once() -> tuple[float, str]:
                    started = time.perf_counter()
                    async with session.post(url + "/v1/chat/completions", json=body) as response:
                        await response.read()
                        return (time.perf_counter() - started) * 1000, response.headers["X-LocalLLM-Cache"]

                miss_ms, outcome = await once()
                assert outcome == "miss", outcome
                hits = []
                for _ in range(requests):
                    elapsed, outcome = await once()
                    assert outcome == "hit", outcome
                    hits.append(elapsed)
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(f"e2e HTTP cache hit  p50 {percentile(hits, 50):6.2f} ms  p99 {percentile(hits, 99):6.2f} ms  "
          f"(the miss that filled it: {miss_ms:.0f} ms, 64-token answer) target p50 <= 20 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--embed-runs", type=int, default=30)
    parser.add_argument("--e2e-requests", type=int, default=200)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-embedding", action="store_true")
    args = parser.parse_args()
    if not args.skip_embedding:
        bench_embedding(args.embed_runs)
    for n in args.sizes:
        asyncio.run(bench_lookup(n, args.lookups))
    if not args.skip_e2e:
        asyncio.run(bench_e2e(args.e2e_requests))


if __name__ == "__main__":
    main()
