"""What constrained output costs: tokens/s with and without a JSON schema, grammar compile times, and how
much a constrained request slows an unconstrained one decoding beside it.

    python bench/structured_output.py [--rounds 6] [--tokens 96]

In-process, on the default model and the daemon's own engine (BatchScheduler, 2 threads, n_parallel 2):

- throughput: the same prompt, greedy, TOKENS tokens, alternating free text and json_schema (a schema
  with free strings, so both answers run to TOKENS tokens); per-token decode time, ratio (target >= 0.9);
- compile: JSON Schema -> GBNF (cold, then cached) and llama.cpp's grammar parse (cold, then cloned);
- neighbour: an unconstrained request decoding beside a constrained one, against beside an
  unconstrained one (target: <= 10% slower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localllm.config import DEFAULT_MODEL, load_settings  # noqa: E402
from localllm.daemon.engine.grammar import _compiled, schema_grammar  # noqa: E402
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine  # noqa: E402
from localllm.daemon.engine.scheduler import BatchScheduler  # noqa: E402
from localllm.daemon.http.server import resolve_model_file  # noqa: E402
from localllm.vocabulary import Sampling, TextDelta  # noqa: E402

# Long free strings: the grammar never ends the answer early, so both variants produce TOKENS tokens.
SCHEMA = {"type": "object", "properties": {"story": {"type": "string"}, "moral": {"type": "string"}},
          "required": ["story", "moral"]}
PROMPT = [{"role": "user", "content": "Tell a long story about a fox and a crow, as JSON."}]


async def timed(scheduler: BatchScheduler, job: GenerationJob) -> tuple[float, int]:
    """(seconds per token after the first, tokens)."""
    stamps = []
    async for event in scheduler.stream(job):
        if isinstance(event, TextDelta):
            stamps.append(time.perf_counter())
    return ((stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")), len(stamps)


async def main_async(args) -> None:
    settings = load_settings().settings
    engine_settings = settings.engine.model_copy(update={"n_parallel": 2, "n_threads": 2, "n_ctx": 1024})
    engine = LlamaEngine(DEFAULT_MODEL, resolve_model_file(settings, DEFAULT_MODEL), engine_settings)
    scheduler = BatchScheduler(engine, queue_size=4)
    scheduler.start()
    await scheduler.wait_ready()
    tokens = engine.tokenize(engine.render_chat(PROMPT))
    eos_bans = tuple((t, -100.0) for t in range(engine.n_vocab) if engine.ends_generation(t))

    started = time.perf_counter()
    grammar = schema_grammar(SCHEMA)
    cold_convert = time.perf_counter() - started
    started = time.perf_counter()
    schema_grammar(SCHEMA)
    cached_convert = time.perf_counter() - started
    big = {"type": "object", "properties": {f"field_{i}": {"type": ["string", "integer", "null"]} for i in range(60)}}
    started = time.perf_counter()
    big_grammar = schema_grammar(big)
    big_convert = time.perf_counter() - started
    started = time.perf_counter()
    engine.grammars.check(big_grammar)
    big_parse = time.perf_counter() - started
    started = time.perf_counter()
    engine.grammars.constraint(big_grammar, engine.n_vocab).close()
    big_clone = time.perf_counter() - started
    _compiled.cache_clear()

    free = Sampling(temperature=0.0, logit_bias=eos_bans)
    constrained = Sampling(temperature=0.0, grammar=grammar)
    plain_times, json_times = [], []
    for _ in range(args.rounds):
        for sampling, into in ((free, plain_times), (constrained, json_times)):
            per_token, _ = await timed(scheduler, GenerationJob(tokens, args.tokens, sampling))
            into.append(per_token)
    neighbour_free, neighbour_json = [], []
    for _ in range(args.rounds):
        for sampling, into in ((free, neighbour_free), (constrained, neighbour_json)):
            probe, _ = await asyncio.gather(timed(scheduler, GenerationJob(tokens, args.tokens, free)),
                                            timed(scheduler, GenerationJob(tokens, args.tokens, sampling)))
            into.append(probe[0])
    await scheduler.stop()

    plain, constrained_t = statistics.median(plain_times), statistics.median(json_times)
    beside_free, beside_json = statistics.median(neighbour_free), statistics.median(neighbour_json)
    print(json.dumps({"rounds": args.rounds, "tokens": args.tokens}))
    print(f"decode, one request: free text {1 / plain:.1f} tok/s, json_schema {1 / constrained_t:.1f} tok/s: "
          f"{plain / constrained_t:.3f}x (target >= 0.9)")
    print(f"an unconstrained request beside a free one {1 / beside_free:.1f} tok/s, beside a constrained one "
          f"{1 / beside_json:.1f} tok/s: {beside_free / beside_json:.3f}x (target >= 0.9)")
    print(f"schema -> GBNF: {cold_convert * 1000:.2f} ms cold, {cached_convert * 1000:.3f} ms cached; a 60-field "
          f"schema: {big_convert * 1000:.1f} ms to convert, {big_parse * 1000:.1f} ms for llama.cpp to parse, "
          f"{big_clone * 1000:.2f} ms per request after (a clone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=96)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
