"""Is llama.cpp's decode itself as fast in the daemon's engine as in llama-server? Interleaved, request by request.

    python bench/decode_parity.py [--rounds 8] [--tokens 128] [--kv-cache-type f16-q8_0]

Alternates, ROUNDS times in one run: one greedy answer from llama-server (built by
llama_cpp_build.py; its own ``timings.predicted_per_token_ms``, sampling included)
and TOKENS one-token ``llama_decode`` calls on the daemon's ``LlamaEngine``
context in this process (same model, threads, per-sequence context and parallel
sequences), timed around the calls. Whole-server benchmarks taken minutes apart
drift by 10-30% on a shared machine; alternating within one run does not.

Prints both per-token series and their medians. A gap here is llama.cpp's build
or the context's settings; a gap only in engine_throughput.py is the daemon's
own per-token work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_servers  # noqa: E402
import engine_throughput  # noqa: E402
from llama_cpp_build import build  # noqa: E402

from localllm.config import DEFAULT_MODEL, EngineSettings, load_settings  # noqa: E402
from localllm.daemon.engine.llama_engine import LlamaEngine
from localllm.daemon.http.server import resolve_model_file

QUESTION = "Tell me a long story about a fox."


def llama_server_per_token(server: engine_servers.RunningServer, tokens: int, logit_bias: dict) -> float:
    body = {"model": server.model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": tokens,
            "temperature": 0, "logit_bias": logit_bias}
    request = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["timings"]["predicted_per_token_ms"]


class EngineDecodes:
    """The daemon's engine context, fed the chat prompt and then one token per decode."""

    def __init__(self, model: Path, settings: EngineSettings):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.engine = LlamaEngine("bench", model, settings)
        self.engine.load()
        self.prompt = self.engine.tokenize(self.engine.render_chat([{"role": "user", "content": QUESTION}]))
        self.batch = llama_cpp.llama_batch_init(max(len(self.prompt), 1), 0, 1)

    def _put(self, i: int, token: int, position: int, wants_logits: bool) -> None:
        batch = self.batch
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, wants_logits
        batch.seq_id[i][0] = 0

    def per_token_ms(self, tokens: int) -> float:
        llama_cpp, ctx = self.llama_cpp, self.engine.context.ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        for i, token in enumerate(self.prompt):
            self._put(i, token, i, i == len(self.prompt) - 1)
        self.batch.n_tokens = len(self.prompt)
        if llama_cpp.llama_decode(ctx, self.batch) != 0:
            raise RuntimeError("prompt decode failed")
        started = time.perf_counter()
        for k in range(tokens):
            self._put(0, 100 + k, len(self.prompt) + k, True)
            self.batch.n_tokens = 1
            if llama_cpp.llama_decode(ctx, self.batch) != 0:
                raise RuntimeError("decode failed")
        return (time.perf_counter() - started) * 1000 / tokens

    def close(self) -> None:
        self.llama_cpp.llama_batch_free(self.batch)
        self.engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048, help="per sequence")
    parser.add_argument("--n-parallel", type=int, default=8)
    parser.add_argument("--kv-cache-type", default="q8_0", choices=("q8_0", "f16-q8_0", "f16"),
                        help="the engine's; llama-server keeps its default (f16)")
    args = parser.parse_args()

    model = resolve_model_file(load_settings().settings, DEFAULT_MODEL).resolve()
    binaries = build(rebuild=False)
    options = engine_servers.ServerOptions(model_path=model, threads=args.threads, n_ctx=args.n_ctx, n_batch=512,
                                           n_parallel=args.n_parallel, llama_server=binaries.server)
    logit_bias, _ = engine_throughput.end_of_generation_bias(model)
    server = engine_servers.start_llama_server(options, Path(tempfile.mkdtemp(prefix="decode-parity-")))
    engine = None
    try:
        engine_servers.wait_ready([server])
        engine = EngineDecodes(model, EngineSettings.model_validate({
            "n_ctx": args.n_ctx, "n_threads": args.threads, "n_parallel": args.n_parallel,
            "kv_cache_type": args.kv_cache_type}))
        llama_server_per_token(server, 8, logit_bias)  # warm-up
        engine.per_token_ms(8)
        theirs, ours = [], []
        for _ in range(args.rounds):
            theirs.append(llama_server_per_token(server, args.tokens, logit_bias))
            ours.append(engine.per_token_ms(args.tokens))
    finally:
        if engine is not None:
            engine.close()
        server.stop()
    print(f"model {model.name}, {args.threads} threads, {args.n_parallel} sequences x {args.n_ctx}, "
          f"{args.tokens} tokens per round, engine KV {args.kv_cache_type}")
    for name, series in (("llama-server ms/token (sampling included)", theirs),
                         ("engine llama_decode ms/token", ours)):
        print(f"  {name:42s} {' '.join(f'{x:.2f}' for x in series)}  median {statistics.median(series):.2f}")
    print(f"  engine / llama-server: {statistics.median(ours) / statistics.median(theirs):.3f}x time per token")


if __name__ == "__main__":
    main()
