"""How often the semantic cache would serve a wrong answer, and how many paraphrases it catches (issue 20).

Prints, first, the honest figures: grouped cross-validation on the dev pairs, as
``bench/train_cache_verifier.py`` measured them and shipped them in the verifier's JSON (the trees
scored pairs whose questions they never saw): per operating point (``cache.max_wrong_hit_share``) the
wrong-hit share, recall, near-miss hit rate and the spread over folds, beside cosine alone.

Then the SHIPPED verifier (trained on this very file, so in-sample and optimistic) replaying the
project's measurement: question A is cached, then B is sent in the same namespace, so A is the only
candidate; B is a hit iff the verifier accepts (A, B) at their cosine. Beside it: cosine-only
baselines (GPTCache style) at 0.90 and 0.95, the near-miss hit rate on near-misses generated from the
dev questions (``near_miss_pairs.py``), the same for direction words the verifier never trained on
(split by whether WordNet's opposites list covers the pair), and the verifier's cost per pair
(features, cross-encoder on one thread and trees, one pair per call as a lookup with one candidate makes
it, and four candidates in one call; embeddings excluded).

    python bench/cache_quality.py [--data PATH] [--embedder sentence-transformers|onnx] [--near-misses 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_miss_pairs import near_miss_pairs, unseen_direction_pairs  # noqa: E402
from train_cache_verifier import (  # noqa: E402
    DEFAULT_DATA,
    embeddings_of,
    load_pairs,
    pair_embeddings,
    wrong_share_and_recall,
)

from localllm.store.cache_verifier import FEATURE_NAMES, DuplicateVerifier, pair_features  # noqa: E402


def print_cross_validation(spec: dict) -> None:
    validation = spec["validation"]
    print(f"GROUPED CROSS-VALIDATION ({validation['method']}), from the verifier's JSON: the honest figures")
    print(f"  {'point':>6} {'wrong':>7} {'recall':>7} {'hits':>6} {'near-miss':>9}  per fold (wrong/recall)")
    for point in spec["operating_points"]:
        o = point["out_of_fold"]
        spread = "  ".join(f"{f['wrong_hit_share']:.1%}/{f['recall']:.1%}" for f in point["per_fold"])
        marker = " (default)" if point["max_wrong_hit_share"] == spec["default_wrong_hit_share"] else ""
        print(f"  {point['max_wrong_hit_share']:6.0%} {o['wrong_hit_share']:7.2%} {o['recall']:7.2%} {o['hits']:6d} "
              f"{o['near_miss_hit_rate']:9.2%}  {spread}{marker}")
    for name, key in (("verifier", "best_recall_at_wrong_hit_share"),
                      ("cosine alone", "cosine_only_best_recall_at_wrong_hit_share")):
        curve = validation[key]
        points = "  ".join(f"{k}: {v:.1%}" for k, v in curve.items())
        print(f"  best recall at a wrong-hit share of, {name:12} {points}")
    near = spec["operating_points"][[p["max_wrong_hit_share"] for p in spec["operating_points"]].index(
        spec["default_wrong_hit_share"])]["out_of_fold"]["near_miss_hit_rate_by_kind"]
    print("  near-miss hit rate by kind at the default: " + "  ".join(f"{k}: {v:.2%}" for k, v in near.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--embedder", default="sentence-transformers", choices=["sentence-transformers", "onnx"])
    parser.add_argument("--near-misses", type=int, default=2000)
    args = parser.parse_args()

    verifier = DuplicateVerifier.load_default()
    print_cross_validation(verifier.spec)

    rows = load_pairs(args.data)
    labels = np.array([int(r["label"]) for r in rows])
    vec_a, vec_b = pair_embeddings(args.data, rows, args.embedder)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    checked = np.nonzero(cosines >= verifier.min_cosine)[0]
    hits = np.zeros(len(rows), dtype=bool)
    hits[checked] = _pair_scores(verifier, [rows[i] for i in checked], cosines[checked]) >= verifier.threshold

    questions = sorted({r["text_a"] for r in rows} | {r["text_b"] for r in rows})
    near = random.Random(5).sample(near_miss_pairs(questions), args.near_misses)
    near_a, near_b = embeddings_of(f"near{args.near_misses}", near, args.embedder)
    near_cos = np.einsum("ij,ij->i", near_a, near_b)
    near_hits = (near_cos >= verifier.min_cosine) & (_pair_scores(verifier, near, near_cos) >= verifier.threshold)

    print(f"\nIN-SAMPLE (the shipped verifier was TRAINED on {args.data.name}: optimistic), {len(rows)} pairs, "
          f"{labels.mean():.1%} duplicates, embedder {args.embedder}, point "
          f"{verifier.operating_point['max_wrong_hit_share']:.0%}, min_cosine {verifier.min_cosine:.2f}")
    print(f"  {'':24} {'wrong-hit share':>16} {'recall':>8} {'hits':>7} {'near-miss hits':>15}")
    share, recall, n = wrong_share_and_recall(hits, labels)
    print(f"  {'verifier':24} {share:16.2%} {recall:8.2%} {n:7d} {near_hits.mean():15.2%}")
    for cut in (0.90, 0.95):
        share, recall, n = wrong_share_and_recall(cosines >= cut, labels)
        print(f"  {f'cosine >= {cut:.2f}':24} {share:16.2%} {recall:8.2%} {n:7d} {(near_cos >= cut).mean():15.2%}")

    # Direction words outside the training list: the words are held out even though the questions are not.
    unseen = unseen_direction_pairs(questions)
    digest = hashlib.sha256("\n".join(p["text_b"] for p in unseen).encode()).hexdigest()[:12]
    unseen_a, unseen_b = embeddings_of(f"unseen{digest}", unseen, args.embedder)
    unseen_cos = np.einsum("ij,ij->i", unseen_a, unseen_b)
    unseen_scores = _pair_scores(verifier, unseen, unseen_cos)
    unseen_hits = (unseen_cos >= verifier.min_cosine) & (unseen_scores >= verifier.threshold)
    lexicon = FEATURE_NAMES.index("lexicon_antonym_split")
    covered = np.array([pair_features(p["text_a"], p["text_b"], 0.0)[lexicon] > 0 for p in unseen])
    print(f"\nnear-misses with direction words never trained on ({len(unseen)}, bench/near_miss_pairs.py "
          f"UNSEEN_DIRECTIONS): verifier hits {unseen_hits.mean():.2%}; WordNet's opposites cover "
          f"{covered.mean():.1%} of them, hits {unseen_hits[covered].mean():.2%} there and "
          f"{unseen_hits[~covered].mean():.2%} elsewhere; cosine >= 0.90 hits {(unseen_cos >= 0.90).mean():.2%}")

    # Cost per pair as a lookup with one close candidate pays it.
    sample = random.Random(3).sample(list(checked), min(300, len(checked)))
    for i in sample[:20]:
        verifier.score(rows[i]["text_a"], rows[i]["text_b"], float(cosines[i]))
    times = []
    for i in sample:
        started = time.perf_counter()
        verifier.score(rows[i]["text_a"], rows[i]["text_b"], float(cosines[i]))
        times.append(time.perf_counter() - started)
    four = []
    for start in range(0, len(sample) - 4, 4):
        group = [rows[i] for i in sample[start:start + 4]]
        started = time.perf_counter()
        verifier.scores([r["text_a"] for r in group], group[0]["text_b"], [0.9] * 4)
        four.append(time.perf_counter() - started)
    print(f"\nverifier cost per pair (one thread): p50 {np.percentile(times, 50) * 1e3:.1f} ms, "
          f"p99 {np.percentile(times, 99) * 1e3:.1f} ms; four candidates in one call: p50 "
          f"{np.percentile(four, 50) * 1e3:.1f} ms ({len(checked)} of {len(rows)} pairs reached the verifier; "
          "the rest fell below min_cosine)")

    # A lookup as the cache makes it: a new question (one side of a dev pair) against its four nearest dev
    # questions above min_cosine, through best_match, which skips the cross-encoder where it cannot matter.
    texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
    vectors = np.r_[vec_a, vec_b]
    unique = {t: i for i, t in enumerate(texts)}
    pool_texts, pool_vectors = list(unique), vectors[list(unique.values())]
    lookups, reads, offered = [], [], []
    for i in random.Random(4).sample(range(len(rows)), 300):
        sims = pool_vectors @ vec_b[i]
        near = [j for j in np.argsort(-sims)[:5] if pool_texts[j] != rows[i]["text_b"]][:4]
        near = [j for j in near if sims[j] >= verifier.min_cosine]
        if not near:
            continue
        before = verifier.cross_encoder.pairs_read
        started = time.perf_counter()
        verifier.best_match([pool_texts[j] for j in near], rows[i]["text_b"], [float(sims[j]) for j in near])
        lookups.append(time.perf_counter() - started)
        reads.append(verifier.cross_encoder.pairs_read - before)
        offered.append(len(near))
    print(f"a lookup as the cache makes it (up to 4 nearest dev questions over min_cosine, {len(lookups)} "
          f"lookups): p50 {np.percentile(lookups, 50) * 1e3:.1f} ms, p99 {np.percentile(lookups, 99) * 1e3:.1f} ms; "
          f"the cross-encoder read {np.mean(reads):.2f} of {np.mean(offered):.2f} candidates a lookup")


def _pair_scores(verifier: DuplicateVerifier, pairs: list[dict], cosines: np.ndarray) -> np.ndarray:
    return verifier.score_features(verifier.feature_matrix([(p["text_a"], p["text_b"]) for p in pairs], cosines))


if __name__ == "__main__":
    main()
