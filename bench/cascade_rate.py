"""How often the confidence cascade fires, per signal and threshold, on real prompts.

Runs the local default model (greedy, like the cache-friendly default) on a
sample of the router's development prompts (MMLU and GSM8K, from
../shared/data/router), records each answer's mean token log-probability,
mean next-token entropy, whether it was cut off and whether it refuses, and
prints the share of answers each signal would escalate at several thresholds,
plus the default [cascade] settings' overall rate. The labels say whether the
*weak reference model* (Mixtral) got the question wrong: a useful signal fires
more often on those, so the rate is printed for both groups.

    python bench/cascade_rate.py [--prompts 80] [--max-tokens 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
from pathlib import Path

from localllm.config import DEFAULT_MODEL, load_settings
from localllm.config.decision import CascadeSettings
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine
from localllm.daemon.engine.scheduler import BatchScheduler
from localllm.daemon.http.server import resolve_model_file
from localllm.decision.cascade import weak_answer_reason
from localllm.vocabulary import AnswerText, Sampling

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "router"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def load_prompts(n: int, seed: int = 7) -> list[tuple[str, bool]]:
    """(prompt, weak model was wrong), half MMLU (across subjects) and half GSM8K."""
    rng = random.Random(seed)
    mmlu = []
    for path in sorted((DATA / "mmlu").glob("*.csv")):
        with path.open(newline="") as handle:
            mmlu += [(row["prompt"], row[WEAK] != "True") for row in csv.DictReader(handle)]
    with (DATA / "gsm8k_responses.csv").open(newline="") as handle:
        gsm8k = [(row["prompt"], row[WEAK] != "True") for row in csv.DictReader(handle)]
    return rng.sample(mmlu, n // 2) + rng.sample(gsm8k, n - n // 2)


async def answer_all(engine: LlamaEngine, prompts, max_tokens: int) -> list:
    scheduler = BatchScheduler(engine, queue_size=len(prompts))
    scheduler.start()
    await scheduler.wait_ready()

    async def answer(prompt: str):
        tokens = await scheduler.render_and_tokenize([{"role": "user", "content": prompt}])
        job = GenerationJob(tokens, max_tokens, Sampling(temperature=0.0), measure_confidence=True)
        answer = await AnswerText.read(scheduler.stream(job))
        return answer.text, answer.finished

    try:
        answers = await asyncio.gather(*(answer(prompt) for prompt, _ in prompts))
    finally:
        await scheduler.stop()
    return [(text, finished, weak_wrong) for (text, finished), (_, weak_wrong) in zip(answers, prompts, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=80)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    settings = load_settings({"engine.n_threads": args.threads, "engine.n_ctx": 2048}).settings
    engine = LlamaEngine(DEFAULT_MODEL, resolve_model_file(settings, DEFAULT_MODEL), settings.engine)
    prompts = load_prompts(args.prompts)
    results = asyncio.run(answer_all(engine, prompts, args.max_tokens))

    def rate(fires, group=None) -> str:
        chosen = [r for r in results if group is None or r[2] == group]
        share = sum(1 for r in chosen if fires(r)) / len(chosen)
        return f"{share:6.1%}"

    logprobs = [r[1].mean_logprob for r in results if r[1].mean_logprob is not None]
    entropies = [r[1].mean_entropy for r in results if r[1].mean_entropy is not None]
    print(f"{len(results)} answers, up to {args.max_tokens} tokens; weak model wrong on "
          f"{sum(r[2] for r in results)} of them")
    print(f"mean logprob: median {statistics.median(logprobs):.3f}, p10 {_pct(logprobs, 10):.3f}, "
          f"p90 {_pct(logprobs, 90):.3f}")
    print(f"mean entropy: median {statistics.median(entropies):.3f}, p10 {_pct(entropies, 10):.3f}, "
          f"p90 {_pct(entropies, 90):.3f}")
    print(f"{'signal':36} {'all':>7} {'weak wrong':>11} {'weak right':>11}")
    rows = [(f"logprob < {t}", lambda r, t=t: r[1].mean_logprob is not None and r[1].mean_logprob < t)
            for t in (-0.5, -0.75, -1.0, -1.5, -2.0)]
    rows += [(f"entropy > {t}", lambda r, t=t: r[1].mean_entropy is not None and r[1].mean_entropy > t)
             for t in (1.0, 1.5, 2.0, 3.0, 4.0)]
    rows += [("truncated (finish_reason=length)", lambda r: r[1].finish_reason == "length")]
    default = CascadeSettings()
    rows += [("refusal", lambda r: weak_answer_reason(r[0], r[1], CascadeSettings(
        truncated_is_weak=False, min_mean_logprob=-1e9, max_mean_entropy=1e9)) == "cascade_refusal")]
    rows += [("default [cascade] (any signal)", lambda r: weak_answer_reason(r[0], r[1], default) is not None)]
    rows += [("default, truncation ignored", lambda r: weak_answer_reason(
        r[0], r[1], default.model_copy(update={"truncated_is_weak": False})) is not None)]
    for name, fires in rows:
        print(f"{name:36} {rate(fires)} {rate(fires, True):>11} {rate(fires, False):>11}")
    engine.close()


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


if __name__ == "__main__":
    main()
