"""Many models on one box (issue 19): loads, swaps, two models at once, and the footprint estimate.

All in one run, on the two catalog models (SmolLM2-135M Q4_1 and Gemma-3-270M Q4_K_M) in a scratch
models dir, through a real `serve()` on 127.0.0.1 (cache and guard off):

  cold start     the daemon starting with a model: until /health says ready
  on-demand      first request for a model not loaded: time to first token, against the same request
                 once it is loaded
  swap           a budget that holds one model: asking for the other evicts the first and loads it
                 (time to first token of the request that swaps)
  two at once    4 streams to each model concurrently: aggregate tokens/s, against 4 streams to each
                 model alone, same cores
  footprint      the estimate from the GGUF header against the RSS a fresh process gains by loading
                 the model and answering with every sequence busy (subprocess per configuration)

    python bench/model_pool.py [--runs 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from localllm.config import DEFAULT_MODEL, Settings
from localllm.daemon.models.footprint import MiB, estimate_footprint
from localllm.daemon.models.gguf_info import read_gguf_info
from localllm.daemon.models.puller import pull

GEMMA = "gemma3-270m"
PROMPT = "Request {i}. Write a long, detailed story about a robot who learns to paint."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """`localllm serve` as a subprocess on a scratch home holding both models."""

    def __init__(self, home: Path, **engine):
        self.home, self.engine, self.port = home, engine, free_port()

    async def __aenter__(self):
        env = {**os.environ, "LOCALLLM_HOME": str(self.home), "LOCALLLM_SERVER_PORT": str(self.port),
               "LOCALLLM_CACHE_ENABLED": "false", "LOCALLLM_GUARD_ENABLED": "false",
               **{f"LOCALLLM_ENGINE_{k.upper()}": str(v) for k, v in self.engine.items()}}
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.session = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")
        while True:
            try:
                async with self.session.get("/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())
            await asyncio.sleep(0.05)
        self.cold_start_s = time.perf_counter() - started
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        self.process.terminate()
        self.process.wait(30)

    async def stream(self, model: str, i: int, tokens: int, headers: dict | None = None) -> tuple[float, int, float]:
        """(time to first token, tokens, seconds) of one streamed greedy answer."""
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT.format(i=i)}], "max_tokens": tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first, used = None, 0
        async with self.session.post("/v1/chat/completions", json=body, headers=headers or {}) as response:
            assert response.status == 200, await response.text()
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and first is None:
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    used = chunk["usage"]["completion_tokens"]
        return first or 0.0, used, time.perf_counter() - started

    async def unload(self, model: str) -> None:
        async with self.session.post("/api/generate", json={"model": model, "prompt": "", "keep_alive": 0}) as r:
            assert r.status == 200, await r.text()
        for _ in range(200):
            async with self.session.get("/api/ps") as response:
                names = [m["name"] for m in (await response.json())["models"]]
            if f"{model}:latest" not in names:
                return
            await asyncio.sleep(0.05)


async def timings(home: Path, runs: int, tokens: int) -> dict:
    result: dict = {"cold_start_s": [], "on_demand_ttft_s": [], "loaded_ttft_s": [], "swap_ttft_s": []}
    for run in range(runs):
        async with Daemon(home, n_parallel=4) as daemon:
            result["cold_start_s"].append(daemon.cold_start_s)
            result["on_demand_ttft_s"].append((await daemon.stream(GEMMA, run, tokens))[0])
            result["loaded_ttft_s"].append((await daemon.stream(GEMMA, run + 100, tokens))[0])
        # Budget for one model: SmolLM2 (loaded at start) is evicted to make room for Gemma.
        async with Daemon(home, n_parallel=4, memory_budget_mb=560) as daemon:
            result["swap_ttft_s"].append((await daemon.stream(GEMMA, run, tokens))[0])
    return {key: round(statistics.median(values), 3) for key, values in result.items()}


async def two_at_once(home: Path, tokens: int, streams: int = 4) -> dict:
    async with Daemon(home, n_parallel=streams) as daemon:
        await daemon.stream(GEMMA, 0, 4)  # both loaded

        async def burst(models: list[str]) -> float:
            started = time.perf_counter()
            done = await asyncio.gather(*(daemon.stream(m, i, tokens) for i, m in enumerate(models)))
            return sum(used for _, used, _ in done) / (time.perf_counter() - started)

        alone = {model: await burst([model] * streams) for model in (DEFAULT_MODEL, GEMMA)}
        together = await burst([DEFAULT_MODEL, GEMMA] * streams)
    return {"smollm_alone_tps": round(alone[DEFAULT_MODEL], 1), "gemma_alone_tps": round(alone[GEMMA], 1),
            "both_tps": round(together, 1),
            "both_vs_mean_alone": round(together / statistics.mean(alone.values()), 3)}


PROBE = """
import asyncio, json, sys, psutil
from pathlib import Path
from localllm.config import Settings
from localllm.daemon.engine.model_registry import registry_for
from localllm.daemon.engine.llama_engine import GenerationJob
from localllm.vocabulary import Sampling, AnswerText

async def main(path, n_ctx, n_parallel, kv):
    process = psutil.Process()
    settings = Settings.model_validate({"engine": {"n_ctx": n_ctx, "n_parallel": n_parallel, "kv_cache_type": kv}})
    before = process.memory_info().rss
    registry = registry_for(settings, ["m"], [Path(path)])
    registry.start_all()
    scheduler = registry.default
    await scheduler.wait_ready()
    tokens = await scheduler.render_and_tokenize([{"role": "user", "content": "Tell me a story. " * 40}])
    await asyncio.gather(*(AnswerText.read(scheduler.stream(GenerationJob(tokens, 48, Sampling(temperature=0))))
                           for _ in range(n_parallel)))
    print(json.dumps({"rss": process.memory_info().rss - before}))
    await registry.stop_all()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def footprint_accuracy(paths: dict[str, Path]) -> list[dict]:
    rows = []
    for name, path in paths.items():
        info = read_gguf_info(path)
        for n_ctx, n_parallel, kv in ((2048, 1, "q8_0"), (2048, 8, "q8_0"), (4096, 4, "q8_0"), (2048, 4, "f16")):
            out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(n_ctx), str(n_parallel), kv],
                                 capture_output=True, text=True, timeout=300, check=True).stdout
            measured = json.loads(out.strip().splitlines()[-1])["rss"]
            estimate = estimate_footprint(info, n_ctx=n_ctx, n_parallel=n_parallel, kv_cache_type=kv).total
            rows.append({"model": name, "n_ctx": n_ctx, "n_parallel": n_parallel, "kv": kv,
                         "estimate_mib": round(estimate / MiB), "measured_mib": round(measured / MiB),
                         "error": round(estimate / measured - 1, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="localllm-pool-") as scratch:
        home = Path(scratch)
        models = home / "data" / "models"
        models.mkdir(parents=True)
        cache = Path(os.environ.get("LOCALLLM_TEST_MODEL_CACHE", Path(__file__).parents[1] / ".cache" / "test-models"))
        paths = {}
        for name in (DEFAULT_MODEL, GEMMA):
            source = pull(name, cache).path
            paths[name] = models / source.name
            try:
                os.link(source, paths[name])
            except OSError:
                shutil.copy2(source, paths[name])
        report = {"threads": Settings().engine.threads, "tokens": args.tokens, "runs": args.runs,
                  "loads": asyncio.run(timings(home, args.runs, args.tokens)),
                  "two_models": asyncio.run(two_at_once(home, args.tokens)),
                  "footprint": footprint_accuracy(paths)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
