"""How often the semantic cache would serve a wrong answer, with the shipped verifier.

Simulates the project's measurement on labelled question pairs: question A is
answered and cached, then question B is sent in the same namespace, so A is the
only candidate; B is a hit iff ``DuplicateVerifier.accepts(A, B, cosine)``. A hit
on a label-0 pair is a wrong answer served. Prints the wrong-hit share (wrong
hits / all hits) and recall (hits on label-1 pairs / label-1 pairs) beside
cosine-only baselines (GPTCache style) at 0.90 and 0.95, and the per-pair cost
of the verifier.

The default data is the dev file the shipped verifier was TRAINED on, so its
figures here are optimistic; the honest held-out figure is the out-of-fold one
the training script measured, printed below from the verifier's JSON.

    python bench/cache_quality.py [--data PATH] [--embedder sentence-transformers|onnx]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cache_verifier import DEFAULT_DATA, load_pairs, pair_embeddings, wrong_share_and_recall  # noqa: E402

from localllm.store.cache_verifier import DuplicateVerifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--embedder", default="sentence-transformers", choices=["sentence-transformers", "onnx"])
    args = parser.parse_args()

    verifier = DuplicateVerifier.load_default()
    rows = load_pairs(args.data)
    labels = np.array([int(r["label"]) for r in rows])
    vec_a, vec_b = pair_embeddings(args.data, rows, args.embedder)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)

    started = time.perf_counter()
    hits = np.array([verifier.accepts(r["text_a"], r["text_b"], float(c)) for r, c in zip(rows, cosines)])
    elapsed = time.perf_counter() - started
    checked = int((cosines >= verifier.min_cosine).sum())

    trained_on = verifier.spec["trained_on"]["data"]
    note = " (the verifier was TRAINED on this file: optimistic)" if args.data.name == trained_on else ""
    print(f"{len(rows)} pairs from {args.data}{note}; {labels.mean():.1%} duplicates; embedder {args.embedder}")
    print(f"verifier threshold {verifier.threshold:.4f}, min_cosine {verifier.min_cosine:.2f}\n")
    print(f"  {'':24} {'wrong-hit share':>16} {'recall':>8} {'hits':>7}")
    share, recall, n = wrong_share_and_recall(hits, labels)
    print(f"  {'verifier':24} {share:16.2%} {recall:8.2%} {n:7d}")
    for cut in (0.90, 0.95):
        share, recall, n = wrong_share_and_recall(cosines >= cut, labels)
        print(f"  {f'cosine >= {cut:.2f}':24} {share:16.2%} {recall:8.2%} {n:7d}")
    held_out = verifier.spec["validation"]["out_of_fold"]
    print(f"  {'verifier, held out *':24} {held_out['wrong_hit_share']:16.2%} {held_out['recall']:8.2%} "
          f"{held_out['hits']:7d}")
    print(f"\n* out-of-fold on {trained_on}, {verifier.spec['validation']['method']} "
          "(from the verifier's JSON): the honest figure.")
    print(f"verifier cost: {elapsed / max(len(rows), 1) * 1e6:.0f} us per pair over all pairs "
          f"({checked} of {len(rows)} reached the trees; the rest fell below min_cosine), embeddings excluded")


if __name__ == "__main__":
    main()
