"""Bursts of requests: engine.prompt_packing "auto" (by measured step cost) against "all" (every
waiting prompt in one step, llama-server's way), alternating in one run.

    python bench/prompt_packing.py [--rounds 4] [--burst 8] [--tokens 64] [--threads 2]

Two engines (``BatchScheduler`` in this process, same model, threads and sequences) take
turns: each round sends BURST streaming requests at once (distinct prompts, greedy,
TOKENS-token answers) to one, then to the other. Reports time to first token (mean, which
is what "auto" minimises, p50 and p99) and the time the whole burst took, pooled over
rounds, plus the step cost "auto" measured. The daemon's HTTP layer is left out: this is
the scheduler's choice alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from localllm.config import DEFAULT_MODEL, EngineSettings, load_settings
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine
from localllm.daemon.engine.scheduler import BatchScheduler
from localllm.daemon.http.server import resolve_model_file
from localllm.vocabulary import Sampling, TextDelta

TOPICS = ("a robot who learns to paint", "a lighthouse keeper on a stormy coast", "a city built under the sea",
          "a dragon who is afraid of heights", "a detective who solves crimes with music",
          "a baker who opens a shop on the moon", "a river that flows backwards", "the last tree in a desert")


async def burst(scheduler: BatchScheduler, size: int, tokens: int, tag: str) -> tuple[list[float], float]:
    async def one(i: int) -> float:
        prompt = await scheduler.render_and_tokenize([{"role": "user", "content": (
            f"Request {tag}-{i}: write a long, detailed story about {TOPICS[i % len(TOPICS)]}.")}])
        started, first = time.perf_counter(), None
        async for event in scheduler.stream(GenerationJob(prompt, tokens, Sampling(temperature=0.0))):
            if first is None and isinstance(event, TextDelta):
                first = time.perf_counter() - started
        return first if first is not None else float("nan")

    started = time.perf_counter()
    firsts = await asyncio.gather(*(one(i) for i in range(size)))
    return list(firsts), time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    model = resolve_model_file(load_settings().settings, DEFAULT_MODEL)
    schedulers = {}
    for packing in ("auto", "all"):
        settings = EngineSettings.model_validate({"n_ctx": 1024, "n_threads": args.threads,
                                                  "n_parallel": args.burst, "prompt_packing": packing})
        scheduler = BatchScheduler(LlamaEngine(packing, model, settings), queue_size=args.burst)
        scheduler.start()
        await scheduler.wait_ready()
        schedulers[packing] = scheduler
    firsts = {name: [] for name in schedulers}
    walls = {name: [] for name in schedulers}
    try:
        for scheduler in schedulers.values():  # warm-up: caches the chat template's head in each
            await burst(scheduler, args.burst, 4, "warm-up")
        for round_ in range(args.rounds):
            order = list(schedulers) if round_ % 2 == 0 else list(reversed(schedulers))
            for name in order:
                got, wall = await burst(schedulers[name], args.burst, args.tokens, f"r{round_}")
                firsts[name] += got
                walls[name].append(wall)
                await asyncio.sleep(0.5)  # let llama.cpp's spinning threads settle before the other engine
                print(f"round {round_} {name}: first token p50 {statistics.median(got) * 1000:.0f} ms, "
                      f"burst {wall:.2f} s", file=sys.stderr)
        cost = schedulers["auto"].step_cost
        print(f"\n{args.burst} requests at once, {args.tokens}-token answers, {args.threads} threads, "
              f"{args.rounds} rounds")
        print(f"{'packing':<8} {'TTFT mean':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'burst p50':>10}")
        for name in schedulers:
            print(f"{name:<8} {statistics.mean(firsts[name]) * 1000:7.0f}ms "
                  f"{statistics.median(firsts[name]) * 1000:7.0f}ms "
                  f"{percentile(firsts[name], 0.99) * 1000:7.0f}ms {statistics.median(walls[name]):9.2f}s")
        print(f"auto / all: TTFT mean {statistics.mean(firsts['auto']) / statistics.mean(firsts['all']):.2f}x, "
              f"p50 {statistics.median(firsts['auto']) / statistics.median(firsts['all']):.2f}x, "
              f"burst {statistics.median(walls['auto']) / statistics.median(walls['all']):.2f}x")
        print(f"step cost measured by auto: {cost.fixed_s * 1000:.1f} ms per step + "
              f"{cost.per_token_s * 1000:.2f} ms per token")
    finally:
        for scheduler in schedulers.values():
            await scheduler.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
