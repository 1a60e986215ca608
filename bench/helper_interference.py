"""How much the daemon's helper models slow llama.cpp's decoding when they run beside it.

The guard's NER (spaCy on numpy's OpenBLAS) and the cache's embedder (onnxruntime) run on worker
threads while llama.cpp generates for other requests on the same cores. Both libraries spread
work over every core by default and spin their idle workers, which on a small box takes the cores
llama.cpp's threads are waiting for. This measures it: a 2-thread greedy decode of 128 tokens,
alone and with a helper working in a loop beside it (each call followed by an equal pause, so
about half the time busy), with the helper on its library's default threads and as localllm runs
it. Rounds are interleaved, so drift on a shared machine hits every variant alike.

    python bench/helper_interference.py [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guard_quality import DEFAULT_DATA, load_records  # noqa: E402

from localllm.config import DEFAULT_MODEL, load_settings  # noqa: E402
from localllm.daemon.http.server import resolve_model_file

STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


def prompts_of(chars: int, count: int) -> list[str]:
    """Dev-data sentences joined into prompts of about ``chars`` characters."""
    prompts, current = [], ""
    for record in load_records(DEFAULT_DATA):
        current += record.text + " "
        if len(current) >= chars:
            prompts.append(current[:chars])
            current = ""
            if len(prompts) == count:
                break
    return prompts


def decode_rate(llm, threads: int) -> float:
    banned = {llm.token_eos(): -100.0}
    started = time.perf_counter()
    out = llm.create_chat_completion(STORY, max_tokens=128, temperature=0, logit_bias=banned)
    return out["usage"]["completion_tokens"] / (time.perf_counter() - started)


def beside(work: Callable[[int], None], measure: Callable[[], float]) -> tuple[float, float]:
    """``measure()`` while ``work(i)`` runs in a loop on another thread; also the helper's ms per call."""
    stop = threading.Event()
    spent: list[float] = []

    def loop() -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            work(i)
            took = time.perf_counter() - started
            spent.append(took)
            stop.wait(took)  # about half the time busy
            i += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        rate = measure()
    finally:
        stop.set()
        thread.join()
    return rate, 1000 * statistics.median(spent) if spent else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (the box's cores here)")
    parser.add_argument("--switch-interval-ms", type=float,
                        help="Python's GIL switch interval for the run (default: the interpreter's, 5 ms)")
    args = parser.parse_args()
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)

    import llama_cpp

    from localllm.decision.guard.entity_model import load_entity_model
    from localllm.store.embedder import OnnxEmbedder

    model_path = resolve_model_file(load_settings().settings, DEFAULT_MODEL)
    llm = llama_cpp.Llama(str(model_path), n_threads=args.threads, n_ctx=512, verbose=False)
    ner = load_entity_model(frozenset({"PERSON", "GPE", "LOC", "FAC", "ORG"}))
    guard_prompts = prompts_of(1000, 50)
    question = ["How do I reset the pressure valve on line 3 of the bottling machine? " * 8]
    embedder = OnnxEmbedder()  # automatic threads, as the daemon runs it

    def ner_default_blas(i: int) -> None:  # the same model, OpenBLAS (the decoder's products) on all cores
        text = guard_prompts[i % len(guard_prompts)]
        with ner._lock:
            ner._recognizer(ner._nlp.make_doc(text))

    variants: dict[str, Callable[[int], None] | None] = {
        "alone": None,
        "guard NER, BLAS threads not limited": ner_default_blas,
        "guard NER, as shipped (1 BLAS thread)": lambda i: ner(guard_prompts[i % len(guard_prompts)]),
        "embedder, all cores (onnxruntime default)": lambda i: embedder.embed(question),
        "embedder, as shipped while generating (1 thread)": lambda i: embedder.embed(question, cores_busy=True),
    }
    measure = lambda: decode_rate(llm, args.threads)  # noqa: E731
    measure()  # warm up
    for work in variants.values():
        if work is not None:
            work(0)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    helper_ms: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, work in variants.items():
            rate, ms = (measure(), float("nan")) if work is None else beside(work, measure)
            rates[name].append(rate)
            helper_ms[name].append(ms)
            print(f"round {round_ + 1}: {name}: {rate:.1f} tokens/s", file=sys.stderr)

    alone = statistics.median(rates["alone"])
    print(f"\n{args.threads}-thread greedy decode of 128 tokens, median of {args.rounds} interleaved rounds, "
          f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms")
    print(f"{'beside the decode':52} {'tokens/s':>9} {'vs alone':>9} {'helper ms/call':>15}")
    for name in variants:
        rate = statistics.median(rates[name])
        ms = statistics.median(helper_ms[name])
        print(f"{name:52} {rate:9.1f} {rate / alone:8.2f}x {'' if ms != ms else f'{ms:15.1f}'}")


if __name__ == "__main__":
    main()
