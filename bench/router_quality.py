"""Quality and decision latency of the SHIPPED complexity router, loaded as the daemon loads it.

Scores every dev prompt through ``ComplexityRouter`` (the packaged ONNX graph and its
metadata) and prints RouteLLM's APGR per benchmark beside length-only and random
baselines. The shipped model was TRAINED on these prompts, so these figures are
in-sample and optimistic; the honest held-out figures are the out-of-fold ones that
``bench/train_router.py`` measured, printed below from the asset's metadata.

Latency: the decision after the embedding (text features + one ONNX run) for single
prompts, as the daemon makes it, over a fixed sample; p50 and p99, and the two parts.

    python bench/router_quality.py [--data DIR] [--latency-prompts 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_router import DEFAULT_DATA, SEED, embed_prompts, load_prompts  # noqa: E402

from localllm.decision.router.complexity_router import ComplexityRouter, apgr
from localllm.decision.router.features import prompt_features


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--latency-prompts", type=int, default=1000)
    args = parser.parse_args()

    router = ComplexityRouter.load()
    prompts = load_prompts(args.data)
    texts = [p.text for p in prompts]
    embeddings = embed_prompts(texts)
    features = np.stack([prompt_features(t) for t in texts])
    scores = router.score_batch(features, embeddings)
    weak = np.array([p.weak for p in prompts])
    strong = np.array([p.strong for p in prompts])
    clean = ~np.array([p.contaminated for p in prompts])
    lengths = np.array([len(t) for t in texts], dtype=float)
    rng = np.random.default_rng(SEED)

    print(f"shipped router v{router.metadata['version']}, {len(prompts)} dev prompts from {args.data}")
    print("IN-SAMPLE: the shipped model was trained on these prompts (optimistic; the held-out figure is below)\n")
    print(f"  {'APGR':28} {'MMLU':>7} {'GSM8K':>7}")
    rows = {"shipped router": scores, "length only (chars)": lengths}
    results: dict[str, list[float]] = {name: [] for name in (*rows, "random (mean of 20)")}
    for dataset in ("mmlu", "gsm8k"):
        mask = clean & np.array([p.dataset == dataset for p in prompts])
        for name, values in rows.items():
            results[name].append(apgr(values[mask], weak[mask], strong[mask]))
        results["random (mean of 20)"].append(float(np.mean(
            [apgr(rng.random(mask.sum()), weak[mask], strong[mask]) for _ in range(20)])))
    for name, (mmlu, gsm) in results.items():
        print(f"  {name:28} {mmlu:7.3f} {gsm:7.3f}")
    held_out = router.metadata["validation"]["out_of_fold_apgr"]
    for name in ("router", "length only (chars)", "embedding LR"):
        row = held_out[name]
        print(f"  {'OOF ' + name + ' *':28} {row['mmlu']:7.3f} {row['gsm8k']:7.3f}")
    print(f"\n* out-of-fold, from the asset's metadata: {router.metadata['validation']['method']}. "
          "The honest figure.")

    # Latency of one decision as the daemon makes it: a fixed mixed sample, one prompt at a time.
    sample = rng.choice(len(prompts), size=min(args.latency_prompts, len(prompts)), replace=False)
    for i in sample[:50]:  # warm-up
        router.score(texts[i], embeddings[i])
    total, feature_part, onnx_part = [], [], []
    for i in sample:
        started = time.perf_counter()
        router.score(texts[i], embeddings[i])
        total.append(time.perf_counter() - started)
        started = time.perf_counter()
        vector = prompt_features(texts[i])
        feature_part.append(time.perf_counter() - started)
        started = time.perf_counter()
        router.score_batch(vector[None, :], embeddings[i][None, :])
        onnx_part.append(time.perf_counter() - started)
    print(f"\ndecision latency after the embedding, {len(sample)} prompts one at a time (median prompt "
          f"{int(np.median([len(texts[i]) for i in sample]))} chars, longest {max(len(texts[i]) for i in sample)}):")
    for name, samples in (("features + ONNX", total), ("  text features", feature_part), ("  ONNX run", onnx_part)):
        print(f"  {name:18} p50 {percentile_ms(samples, 50):6.3f} ms   p99 {percentile_ms(samples, 99):6.3f} ms")


if __name__ == "__main__":
    main()
