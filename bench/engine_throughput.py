"""Engine throughput: localllm's daemon against llama.cpp's llama-server and
llama-cpp-python's server, side by side in one run (issue 6).

All three serve the same GGUF file with the same threads, per-sequence context
and batch size (see engine_servers.py for each command line); llama-server and
llama-bench are built by llama_cpp_build.py from the llama.cpp that the
installed llama-cpp-python vendors. Servers start together and take turns per
round, the order rotating, so machine noise hits all alike.

  throughput   for each concurrency C (1, 4, 8): C streaming clients each send N
               chat completions one after another (distinct prompts, so no cache can
               help; temperature 0, max_tokens 128, logit_bias -100 on the
               end-of-generation tokens so every answer is 128 tokens long). The
               cycle over concurrencies and servers runs --repeats times, and each
               server's rounds at one C are pooled. Reports aggregate tokens/s (all
               completion tokens / the rounds' wall time), per-stream decode tokens/s
               (median of (tokens - 1) / (last - first token)), time to first token
               p50/p99, request time p50, tokens per answer (usage.completion_tokens
               where the server sends it with stream_options.include_usage, else
               content chunks).
  shared prefix  a ~500-token system prompt with different short questions, in waves
               of C requests (C = 1 and 8): the first wave finds nothing cached, later
               ones can reuse the prefix. Reports TTFT p50 of the first wave and of the
               later ones (localllm and llama-server; llama-cpp-python keeps only its
               last prompt).
  ceiling      `llama-bench -p 0 -n 128` (tg128) on the same model and threads, before
               and after the rounds (mean): the engine's single-stream ceiling;
               localllm's per-stream tokens/s at C=1 over it is what Python costs.

Ratios against llama-server and llama-cpp-python in the same run, with the
issue's targets: aggregate tokens/s >= 1.0x llama-server at C=1 and at C=8,
first-token p50 at C=8 <= 1.0x, aggregate >= 2x llama-cpp-python at C=8. The
"other CPU" column is the cores other processes used during a round: on this
shared 2-core machine anything above ~0.1 makes that round's figures noise
(llama.cpp's spinning thread pools collapse when a core is taken), so rerun.

    python bench/engine_throughput.py [--threads 2] [--requests-per-client 2] [--repeats 2]
        [--concurrency 1,4,8] [--servers localllm,llama-server,llama-cpp-python]
        [--skip-build] [--json results.json] [--log-dir DIR]
        [--kv-cache-type default|f16|q8_0] [--llama-server-args='--kv-unified']
        [--servers localllm,localllm-baseline --baseline-python OTHER_VENV/bin/python]

With ``localllm-baseline`` an earlier localllm (installed in another environment,
e.g. a worktree of an older commit with ``pip install .``) runs beside this one,
and the ratios against it are the A/B of what changed in between.

The first run builds llama-server and llama-bench (15-20 minutes on 2 cores,
cached in ~/.cache/localllm-bench); a full run takes about 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_servers import (  # noqa: E402
    BASELINE,
    SERVER_NAMES,
    STARTERS,
    RunningServer,
    ServerOptions,
    version_of,
    wait_ready,
)
from foreign_cpu import ForeignCpu  # noqa: E402
from llama_cpp_build import BuildError, LlamaCppBinaries, build, cache_dir, llama_cpp_python_version  # noqa: E402

from localllm.config import DEFAULT_MODEL, load_settings  # noqa: E402
from localllm.daemon.http.server import resolve_model_file

STORY = ("Request {tag}: write a long, detailed story about {topic}. Use many sentences and describe every "
         "scene.")
TOPICS = ("a robot who learns to paint", "a lighthouse keeper on a stormy coast", "a city built under the sea",
          "a dragon who is afraid of heights", "a detective who solves crimes with music",
          "a baker who opens a shop on the moon", "a river that flows backwards", "the last tree in a desert")
QUESTIONS = ("How many vacation days do new employees get?", "Who approves travel over the budget?",
             "What is the dress code on Fridays?", "How do I report a broken laptop?",
             "When are expense reports due?", "Can I work from another country?",
             "What happens if I miss the security training?", "How do I book a meeting room?")
POLICY_RULES = ("Employees must badge in at the front desk and never lend their badge to anyone.",
                "Travel must be booked through the internal portal at least two weeks in advance.",
                "Expense reports are due on the fifth working day of the following month.",
                "Laptops are encrypted; report loss or theft to the security desk within one hour.",
                "Meeting rooms are booked through the calendar and released if unused after ten minutes.",
                "Remote work from abroad needs written approval from both the manager and legal.",
                "Security training is mandatory every year and access is suspended if it lapses.",
                "New employees receive twenty vacation days, rising by one day per year of service.")


@dataclass
class RequestResult:
    ttft_s: float
    total_s: float
    decode_s: float  # first to last content token
    tokens: int
    chunks: int
    finish_reason: str | None
    started_s: float  # since the round began
    ended_s: float


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with few samples p99 is the largest, which is what it should say."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def system_prompt(tokenize, target_tokens: int, tag: str) -> str:
    """Policy rules (numbered, so the text never repeats verbatim) up to ~target_tokens; the tag
    goes first so that two workloads never share a prefix."""
    lines = [f"[Session {tag}] You are the help desk assistant of Example Corp. Answer from these rules only."]
    n = 0
    while len(tokenize("\n".join(lines))) < target_tokens:
        lines.append(f"Rule {n + 1}: {POLICY_RULES[n % len(POLICY_RULES)]} (section {n // len(POLICY_RULES) + 1})")
        n += 1
    return "\n".join(lines)


class Client:
    """Streams chat completions; drops logit_bias for a server that refuses it."""

    def __init__(self, server: RunningServer, session: aiohttp.ClientSession, logit_bias: dict[str, float]):
        self.server, self.session, self.logit_bias = server, session, logit_bias
        self.bias_refused: str | None = None

    async def complete(self, messages: list[dict], max_tokens: int, t0: float) -> RequestResult:
        body = {"model": self.server.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}
        if self.logit_bias and self.bias_refused is None:
            body["logit_bias"] = self.logit_bias
        started = time.perf_counter()
        first = last = None
        chunks, usage_tokens, finish = 0, None, None
        async with self.session.post(self.server.url + "/v1/chat/completions", json=body) as response:
            if response.status != 200:
                text = await response.text()
                if "logit_bias" in body and response.status in (400, 422) and "logit_bias" in text:
                    self.bias_refused = text[:300]
                    return await self.complete(messages, max_tokens, t0)
                raise RuntimeError(f"{self.server.name}: HTTP {response.status}: {text[:500]}")
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or ():
                    if choice.get("delta", {}).get("content"):
                        last = time.perf_counter()
                        first = first or last
                        chunks += 1
                    finish = choice.get("finish_reason") or finish
        ended = time.perf_counter()
        if first is None:
            raise RuntimeError(f"{self.server.name}: an answer without any content")
        return RequestResult(first - started, ended - started, last - first, usage_tokens or chunks, chunks,
                             finish, started - t0, ended - t0)


def new_session() -> aiohttp.ClientSession:
    # A new connection per request for every server: llama-server (cpp-httplib) advertises
    # keep-alive but drops reused streaming connections now and then ("Server disconnected").
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=900),
                                 connector=aiohttp.TCPConnector(limit=0, force_close=True))


async def run_round(server: RunningServer, concurrency: int, per_client: int, max_tokens: int,
                    logit_bias: dict, tag: str) -> tuple[list[RequestResult], float, str | None]:
    """concurrency clients, each sending per_client distinct requests back to back."""
    async with new_session() as session:
        client = Client(server, session, logit_bias)
        t0 = time.perf_counter()

        async def one_client(c: int) -> list[RequestResult]:
            results = []
            for k in range(per_client):
                prompt = STORY.format(tag=f"{tag}-{c}-{k}", topic=TOPICS[(c + k) % len(TOPICS)])
                results.append(await client.complete([{"role": "user", "content": prompt}], max_tokens, t0))
            return results

        per_client_results = await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        wall = time.perf_counter() - t0
    return [r for rs in per_client_results for r in rs], wall, client.bias_refused


async def run_prefix_waves(server: RunningServer, concurrency: int, waves: int, prefix: str, max_tokens: int,
                           logit_bias: dict) -> list[list[RequestResult]]:
    async with new_session() as session:
        client = Client(server, session, logit_bias)
        t0 = time.perf_counter()
        out = []
        for w in range(waves):
            messages = [[{"role": "system", "content": prefix},
                         {"role": "user", "content": f"({w}.{c}) {QUESTIONS[(w * concurrency + c) % len(QUESTIONS)]}"}]
                        for c in range(concurrency)]
            out.append(list(await asyncio.gather(*(client.complete(m, max_tokens, t0) for m in messages))))
        return out


def summarize(results: list[RequestResult], wall: float, max_tokens: int) -> dict:
    tokens = [r.tokens for r in results]
    return {"requests": len(results), "wall_s": wall, "aggregate_tps": sum(tokens) / wall,
            "stream_tps": statistics.median((r.tokens - 1) / r.decode_s for r in results if r.decode_s > 0),
            "ttft_p50_s": percentile([r.ttft_s for r in results], 0.5),
            "ttft_p99_s": percentile([r.ttft_s for r in results], 0.99),
            "request_p50_s": percentile([r.total_s for r in results], 0.5),
            "tokens_per_answer": statistics.mean(tokens), "short_answers": sum(t < max_tokens for t in tokens),
            "tokens_min": min(tokens), "chunks_per_answer": statistics.mean(r.chunks for r in results)}


def llama_bench_tg(binary: Path, model: Path, threads: int, tokens: int) -> dict:
    foreign = ForeignCpu([])
    foreign.start()
    result = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(tokens),
                             "-o", "json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"llama-bench failed:\n{result.stderr[-2000:]}")
    row = json.loads(result.stdout)[0]
    return {"tps": row["avg_ts"], "stddev": row["stddev_ts"], "test": f"tg{tokens}", "foreign_cores": foreign.stop()}


def llama_bench_twice(before: dict, binary: Path, model: Path, threads: int, tokens: int) -> dict:
    """The mean of the runs before and after the servers' rounds."""
    after = llama_bench_tg(binary, model, threads, tokens)
    return {**before, "tps": (before["tps"] + after["tps"]) / 2, "runs": [before, after]}


def end_of_generation_bias(model_path: Path) -> tuple[dict[str, float], Callable[[str], list[int]]]:
    """logit_bias that bans every end-of-generation token, and the model's tokenizer."""
    import llama_cpp

    vocab_model = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    vocab = vocab_model._model.vocab
    banned = [i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    return ({str(i): -100.0 for i in banned},
            lambda text: vocab_model.tokenize(text.encode(), add_bos=False, special=False))


def ratio_line(label: str, value: float, target: float | None, higher_is_better: bool = True,
               per_repeat: list[float] | None = None) -> tuple[str, dict]:
    met = None if target is None else (value >= target if higher_is_better else value <= target)
    mark = "" if met is None else (f" (target {'>=' if higher_is_better else '<='} {target:g}x: "
                                   f"{'met' if met else 'MISSED'})")
    row = {"label": label, "ratio": value, "target": target, "met": met}
    spread = ""
    if per_repeat and len(per_repeat) >= 2:
        # Servers take turns within a repeat, so each repeat gives one paired ratio; their spread
        # says whether the pooled ratio is apart from 1.0x or inside this machine's noise.
        low, high = ratio_interval(per_repeat)
        spread = f" [repeats {min(per_repeat):.2f}-{max(per_repeat):.2f}, 95% CI {low:.3f}-{high:.3f}]"
        row.update(per_repeat=per_repeat, ci95=[low, high])
    return f"  {label:<52} {value:6.3f}x{mark}{spread}", row


# Student's t, two-sided 95%, by degrees of freedom (1-30); beyond that the normal 1.96 is close enough.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def ratio_interval(ratios: list[float]) -> tuple[float, float]:
    """95% confidence interval of the mean of per-repeat ratios."""
    mean = statistics.mean(ratios)
    half = (_T95[len(ratios) - 2] if len(ratios) - 2 < len(_T95) else 1.96) * statistics.stdev(ratios) \
        / math.sqrt(len(ratios))
    return mean - half, mean + half


def report(rounds: dict, prefix: dict, ceiling: dict | None, order: list[str]) -> list[dict]:
    print()
    for c in sorted({c for by_c in rounds.values() for c in by_c}):
        print(f"concurrency {c}")
        print(f"  {'server':<17} {'tok/s agg':>9} {'tok/s/stream':>12} {'TTFT p50':>9} {'TTFT p99':>9} "
              f"{'request p50':>11} {'tok/answer':>10} {'other CPU':>9}")
        for name in order:
            s = rounds[name].get(c)
            if s:
                print(f"  {name:<17} {s['aggregate_tps']:9.1f} {s['stream_tps']:12.1f} {s['ttft_p50_s'] * 1000:7.0f}ms "
                      f"{s['ttft_p99_s'] * 1000:7.0f}ms {s['request_p50_s']:10.2f}s {s['tokens_per_answer']:10.1f}"
                      f" {s.get('foreign_cores') or 0:9.2f}"
                      + (f"  ({s['short_answers']} short)" if s["short_answers"] else ""))
    ratios = []
    print("\nratios (localllm / baseline, same run)")
    local = rounds.get("localllm", {})
    for baseline, checks in (("llama-server", ((1, "aggregate_tps", 1.0, True), (4, "aggregate_tps", None, True),
                                               (8, "aggregate_tps", 1.0, True), (1, "ttft_p50_s", None, False),
                                               (8, "ttft_p50_s", 1.0, False))),
                             ("llama-cpp-python", ((1, "aggregate_tps", None, True), (8, "aggregate_tps", 2.0, True),
                                                   (8, "ttft_p50_s", None, False))),
                             (BASELINE, ((1, "aggregate_tps", None, True), (8, "aggregate_tps", None, True),
                                         (1, "ttft_p50_s", None, False), (8, "ttft_p50_s", None, False)))):
        for c, key, target, higher in checks:
            if c in local and c in rounds.get(baseline, {}):
                what = "tokens/s" if key == "aggregate_tps" else "first-token p50"
                mine, theirs = local[c].get("repeats", []), rounds[baseline][c].get("repeats", [])
                per_repeat = ([a[key] / b[key] for a, b in zip(mine, theirs, strict=True)]
                              if len(mine) == len(theirs) else None)
                line, row = ratio_line(f"{what} at C={c} vs {baseline}", local[c][key] / rounds[baseline][c][key],
                                       target, higher, per_repeat)
                print(line)
                ratios.append({**row, "baseline": baseline, "concurrency": c, "metric": key})
    if ceiling and 1 in local:
        line, row = ratio_line(f"single-stream tokens/s vs llama-bench tg128 ({ceiling['tps']:.1f})",
                               local[1]["stream_tps"] / ceiling["tps"], None)
        print(line)
        ratios.append({**row, "baseline": "llama-bench", "concurrency": 1, "metric": "stream_tps"})
        for name in order:
            if name != "localllm" and 1 in rounds[name]:
                print(f"  ({name} single-stream vs tg128: {rounds[name][1]['stream_tps'] / ceiling['tps']:.2f}x)")
    if prefix:
        print("\nshared prefix: time to first token, first wave (nothing cached) vs later waves")
        for name, by_c in prefix.items():
            for c, p in by_c.items():
                print(f"  {name:<17} C={c}: first {p['first_p50_s'] * 1000:6.0f} ms, later p50 "
                      f"{p['later_p50_s'] * 1000:6.0f} ms ({p['later_p50_s'] / p['first_p50_s']:.2f}x; "
                      f"falls: {'yes' if p['later_p50_s'] < p['first_p50_s'] else 'NO'}; "
                      f"other processes {p.get('foreign_cores') or 0:.2f} cores)")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2,
                        help="cycles over all concurrencies and servers; a server's rounds are pooled")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated client counts")
    parser.add_argument("--servers", default=",".join(SERVER_NAMES))
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of every answer")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    parser.add_argument("--n-parallel", type=int, default=8,
                        help="localllm engine.n_parallel and llama-server -np; 0 leaves localllm's unset")
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--prefix-tokens", type=int, default=500, help="shared system prompt length; 0 skips")
    parser.add_argument("--prefix-waves", type=int, default=4)
    parser.add_argument("--prefix-answer-tokens", type=int, default=16)
    parser.add_argument("--llama-server-args", default="", help="extra llama-server flags, e.g. '--kv-unified'")
    parser.add_argument("--kv-cache-type", choices=("default", "f16", "q8_0"), default="default",
                        help="KV cache precision for all three servers (default: each its own: localllm "
                             "q8_0, the others f16)")
    parser.add_argument("--localllm-setting", action="append", default=[], metavar="LOCALLLM_X=VALUE",
                        help="an extra setting for localllm's daemon (repeatable), e.g. "
                             "LOCALLLM_CACHE_ENABLED=true to run with the semantic cache on")
    parser.add_argument("--skip-build", action="store_true",
                        help="use an existing build, skip llama-server and llama-bench if there is none")
    parser.add_argument("--no-llama-bench", action="store_true")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs (and localllm's home) here")
    parser.add_argument("--baseline-python", type=Path,
                        help=f"with --servers ...,{BASELINE}: the python of another environment whose installed "
                             "localllm (an earlier commit) runs beside this one, for an A/B of a change")
    args = parser.parse_args()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if unknown := set(names) - {*SERVER_NAMES, BASELINE}:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {', '.join((*SERVER_NAMES, BASELINE))}")
    if BASELINE in names and args.baseline_python is None:
        parser.error(f"{BASELINE} needs --baseline-python")
    levels = [int(c) for c in args.concurrency.split(",")]
    localllm_env = []
    for setting in args.localllm_setting:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("LOCALLLM_"):
            parser.error(f"--localllm-setting takes LOCALLLM_NAME=VALUE, got {setting!r}")
        localllm_env.append((key, value))

    binaries = None
    try:
        binaries = build(rebuild=False) if not args.skip_build else None
    except BuildError as error:
        raise SystemExit(f"error: {error}") from None
    if args.skip_build:
        version = llama_cpp_python_version()
        bin_dir = cache_dir(version) / "build" / "bin"
        candidate = LlamaCppBinaries(version, bin_dir / "llama-server", bin_dir / "llama-bench")
        if candidate.server.exists() and candidate.bench.exists():
            binaries = candidate
        elif "llama-server" in names:
            print(f"no llama-server in {bin_dir}: leaving it out (run without --skip-build to build it)",
                  file=sys.stderr)
            names.remove("llama-server")

    model_path = resolve_model_file(load_settings().settings, DEFAULT_MODEL).resolve()
    logit_bias, tokenize = end_of_generation_bias(model_path)
    options = ServerOptions(model_path, args.threads, args.n_ctx, args.n_batch, args.n_parallel,
                            binaries.server if binaries else None, tuple(args.llama_server_args.split()),
                            None if args.kv_cache_type == "default" else args.kv_cache_type, tuple(localllm_env),
                            args.baseline_python)
    print(f"model {model_path.name}, threads {args.threads}, n_ctx {args.n_ctx}/sequence, n_batch {args.n_batch}, "
          f"{args.repeats} x {args.requests_per_client} requests per client, {args.tokens}-token answers "
          f"(banned end-of-generation tokens {sorted(int(t) for t in logit_bias)})", file=sys.stderr)

    ceiling = None
    if binaries and not args.no_llama_bench:
        print("llama-bench tg128 ...", file=sys.stderr)
        ceiling = llama_bench_tg(binaries.bench, model_path, args.threads, args.tokens)

    pooled: dict[str, dict[int, dict]] = {n: {} for n in names}
    bias_refused: dict[str, str] = {}
    prefix: dict[str, dict[int, dict]] = {}
    servers: list[RunningServer] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(args.log_dir)) if args.log_dir
          else tempfile.TemporaryDirectory(prefix="engine-throughput-")) as workdir:
        try:
            for name in names:  # one by one, so that `finally` stops those started before a failure
                servers.append(STARTERS[name](options, Path(workdir)))
            wait_ready(servers)
            foreign = ForeignCpu([server.process.pid for server in servers])
            for server in servers:  # load, allocate and touch everything once
                asyncio.run(run_round(server, 1, 1, 8, logit_bias, "warm-up"))
            for rep in range(args.repeats):
                for i, c in enumerate(levels):
                    # rotate so no server always goes first (or right after another's busy round)
                    turn = (rep * len(levels) + i) % len(servers)
                    for server in servers[turn:] + servers[:turn]:
                        print(f"{server.name}: {c} clients x {args.requests_per_client} requests", file=sys.stderr)
                        foreign.start()
                        results, wall, refused = asyncio.run(run_round(
                            server, c, args.requests_per_client, args.tokens, logit_bias, f"c{c}r{rep}"))
                        if refused:
                            bias_refused[server.name] = refused
                        pool = pooled[server.name].setdefault(c, {"results": [], "wall_s": 0.0, "foreign": [],
                                                                  "repeats": []})
                        pool["results"] += results
                        pool["wall_s"] += wall
                        pool["foreign"].append(foreign.stop() or 0.0)
                        s = summarize(results, wall, args.tokens)
                        pool["repeats"].append(s)
                        print(f"  {s['aggregate_tps']:.1f} tok/s, TTFT p50 {s['ttft_p50_s'] * 1000:.0f} ms, "
                              f"{s['tokens_per_answer']:.0f} tokens/answer, other processes "
                              f"{pool['foreign'][-1]:.2f} cores", file=sys.stderr)
                        time.sleep(1)  # let spinning threads settle before the next server
            if args.prefix_tokens and args.prefix_waves:  # --prefix-waves 0 skips the workload
                for c in (1, 8):
                    text = system_prompt(tokenize, args.prefix_tokens, f"prefix-c{c}")
                    for server in servers:
                        if server.name == "llama-cpp-python":
                            continue
                        print(f"{server.name}: shared prefix, waves of {c}", file=sys.stderr)
                        foreign.start()
                        waves = asyncio.run(run_prefix_waves(server, c, args.prefix_waves, text,
                                                             args.prefix_answer_tokens, logit_bias))
                        later = [r.ttft_s for wave in waves[1:] for r in wave]
                        prefix.setdefault(server.name, {})[c] = {
                            "prefix_tokens": len(tokenize(text)),
                            "first_p50_s": percentile([r.ttft_s for r in waves[0]], 0.5),
                            "later_p50_s": percentile(later, 0.5) if later else float("nan"),
                            "waves": [[r.ttft_s for r in wave] for wave in waves], "foreign_cores": foreign.stop()}
                        time.sleep(1)
        finally:
            for server in servers:
                server.stop()

    if binaries and not args.no_llama_bench:  # again, after: the machine's speed drifts
        ceiling = llama_bench_twice(ceiling, binaries.bench, model_path, args.threads, args.tokens)
    # all repeats of a (server, concurrency) pooled: tokens over summed wall time, percentiles over all requests
    rounds = {name: {c: {**summarize(pool["results"], pool["wall_s"], args.tokens),
                         "foreign_cores": max(pool["foreign"]), "repeats": pool["repeats"]}
                     for c, pool in by_c.items()}
              for name, by_c in pooled.items()}
    raw = {name: {c: [asdict(r) for r in pool["results"]] for c, pool in by_c.items()}
           for name, by_c in pooled.items()}
    ratios = report(rounds, prefix, ceiling, names)
    for name, text in bias_refused.items():
        print(f"note: {name} refused logit_bias ({text}); its answers may be shorter", file=sys.stderr)
    print(f"model {model_path.name}, threads {args.threads}, n_ctx {args.n_ctx} per sequence, n_parallel "
          f"{args.n_parallel or 'default'}, KV cache {args.kv_cache_type}, {args.repeats} x {args.requests_per_client} "
          f"requests per client, {args.tokens}-token answers")
    if args.json:
        args.json.write_text(json.dumps({
            "model": str(model_path), "args": {k: str(v) for k, v in vars(args).items()},
            "versions": {n: version_of(n, options) for n in names},
            "servers": {s.name: {"command": s.command, "settings": s.settings} for s in servers},
            "llama_bench": ceiling, "rounds": rounds, "requests": raw, "shared_prefix": prefix,
            "ratios": ratios, "logit_bias": logit_bias, "logit_bias_refused": bias_refused}, indent=1))


if __name__ == "__main__":
    main()
