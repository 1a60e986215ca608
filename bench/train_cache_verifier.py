"""Trains the semantic cache's duplicate verifier and writes store/assets/cache_verifier.json.

From the labelled Quora pairs in the shared dev folder plus generated near-misses of their questions
(``near_miss_pairs.py``: one number, name, negation or direction word changed, labelled "different"):
embeds every question with the project's own embedder (cached under /tmp), builds the pair features
(``localllm.store.cache_verifier.pair_features``), then estimates held-out quality with grouped k-fold
cross-validation (pairs that share a question, directly or through a chain of pairs, stay in one fold,
and so do the near-misses made from its questions). On the out-of-fold scores it picks a threshold per
operating point (the wrong-hit share allowed: 2% ... 15%) and reports, per point, recall, the
wrong-hit share, the near-miss hit rate and the spread over folds. It refits on everything and exports
the trees and the table as JSON.

The last feature is the cross-encoder's log-odds (``localllm.store.cache_cross_encoder``), stacked: run
``train_cache_cross_encoder.py --epochs 2`` first, which leaves in WORK its out-of-fold log-odds for
every pair (``oof.npz``), the near-misses it scored out of fold (``near_misses.jsonl``) and the final
model; the trees train and are measured on the out-of-fold log-odds, so they learn how far to trust the
cross-encoder on questions it never saw. The final model is copied to store/assets with its sha256.
``--hand-features-only`` reports the trees without the cross-encoder, for comparison, and writes nothing.

    python bench/train_cache_cross_encoder.py --epochs 2 --work /tmp/localllm-cross-encoder   # ~75 min
    python bench/train_cache_verifier.py [--data PATH] [--embedder sentence-transformers|onnx] [--folds 5]
                                         [--cross-encoder-oof /tmp/localllm-cross-encoder]
                                         [--cross-encoder-model /tmp/localllm-cross-encoder/final.onnx]

Needs scikit-learn (training only; the daemon scores with numpy). Takes a few minutes after the
embeddings (which take about 4 minutes on 2 cores the first time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from near_miss_pairs import entity_pool, near_miss_pairs  # noqa: E402

from localllm.file_digest import sha256_of_file  # noqa: E402
from localllm.store.antonym_lexicon import LEXICON_FILE, load_lexicon  # noqa: E402
from localllm.store.cache_verifier import (  # noqa: E402
    ASSET,
    FORMAT_VERSION,
    VERIFIER_FEATURES,
    Question,
    pair_features,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cache" / "qqp_dev.jsonl"
SEED = 20240611
MODEL = {"max_iter": 300, "max_depth": 4, "learning_rate": 0.05, "min_samples_leaf": 20, "early_stopping": False}
NEAR_MISSES = 9000  # generated near-misses, scored out of fold for the near-miss hit rate
TRAIN_NEAR_MISSES = 3000  # of which train the trees: with 1,500, 1.2% of number changes hit at 8%; more cost recall
OPERATING_POINTS = (0.05, 0.08, 0.10, 0.15)  # 2-3%: below the labels' noise floor, the same as 5%
DEFAULT_POINT = 0.08  # at 5% only near-verbatim repeats pass on these labels (BENCHMARKS.md)
# A decisive mismatch may only lower the score, more overlap only raise it: the trees cannot learn a
# quirk of the dev rows in which, say, a different number makes a pair more likely the same.
MONOTONIC = {
    "cosine": 1, "content_jaccard": 1, "content_bigram_jaccard": 1, "char_trigram_jaccard": 1,
    "unmatched_min": -1, "unmatched_max": -1, "number_mismatch": -1, "negation_mismatch": -1,
    "entity_mismatches": -1, "quote_mismatch": -1, "unit_mismatch": -1, "date_mismatch": -1, "wh_mismatch": -1,
    "wh_difference": -1, "comparative_mismatch": -1, "person_mismatch": -1, "antonym_split": -1,
    "word_order_swap": -1, "lexicon_antonym_split": -1, "cross_encoder_logit": 1,
}
SPLIT_INF = 1e30  # padding splits that always go left
CURVE_POINTS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15)


def load_pairs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pair_embeddings(path: Path, rows: list[dict], backend: str) -> tuple[np.ndarray, np.ndarray]:
    """(vectors of text_a, vectors of text_b), computed once per data file and backend and kept in /tmp."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return embeddings_of(digest, rows, backend)


def embeddings_of(digest: str, rows: list[dict], backend: str) -> tuple[np.ndarray, np.ndarray]:
    cache_a, cache_b = (Path(f"/tmp/qqp_emb_{backend}_{digest}_{side}.npy") for side in "ab")
    if cache_a.exists() and cache_b.exists():
        return np.load(cache_a), np.load(cache_b)
    from localllm.store.embedder import load_embedder

    # Batches of similar length: the ONNX backend pads every text in a batch to the longest one.
    texts = sorted({r["text_a"] for r in rows} | {r["text_b"] for r in rows}, key=lambda t: (len(t), t))
    print(f"embedding {len(texts)} questions with {backend} (once; cached in /tmp) ...", file=sys.stderr)
    embedder = load_embedder(backend).inner  # no memo: every text is new
    started = time.perf_counter()
    chunks = []
    for start in range(0, len(texts), 256):
        chunks.append(embedder.embed(texts[start:start + 256]))
        if len(chunks) % 20 == 0:
            print(f"  {start + len(chunks[-1])}/{len(texts)} {time.perf_counter() - started:.0f} s", file=sys.stderr)
    vectors = np.concatenate(chunks)
    index = {text: i for i, text in enumerate(texts)}
    a = vectors[[index[r["text_a"]] for r in rows]]
    b = vectors[[index[r["text_b"]] for r in rows]]
    np.save(cache_a, a)
    np.save(cache_b, b)
    return a, b


def feature_matrix(rows: list[dict], cosines: np.ndarray) -> np.ndarray:
    questions: dict[str, Question] = {}
    for r in rows:
        for text in (r["text_a"], r["text_b"]):
            if text not in questions:
                questions[text] = Question(text)
    return np.array([pair_features(questions[r["text_a"]], questions[r["text_b"]], float(c))
                     for r, c in zip(rows, cosines)], dtype=np.float64)


def question_groups(rows: list[dict]) -> np.ndarray:
    """Connected components of the graph whose edges are pairs: no question text crosses folds."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        parent[find(r["text_a"])] = find(r["text_b"])
    roots: dict[str, int] = {}
    return np.array([roots.setdefault(find(r["text_a"]), len(roots)) for r in rows])


def wrong_share_and_recall(hits: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    n_hits = int(hits.sum())
    wrong = int((hits & (labels == 0)).sum())
    recall = float((hits & (labels == 1)).sum() / max((labels == 1).sum(), 1))
    return (wrong / n_hits if n_hits else 0.0), recall, n_hits


def best_recall_at(scores: np.ndarray, labels: np.ndarray, share: float) -> tuple[float, float]:
    """Highest recall over thresholds whose wrong-hit share is at most ``share``: (recall, threshold)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    hits = np.arange(1, len(s) + 1)
    wrong = np.cumsum(y == 0)
    # only cut where the next score differs, so a threshold admits whole ties
    cut = np.r_[s[1:] != s[:-1], True]
    ok = cut & (wrong / hits <= share)
    if not ok.any():
        return 0.0, float("inf")
    recalls = np.cumsum(y == 1) / max((labels == 1).sum(), 1)
    i = int(np.argmax(np.where(ok, recalls, -1)))
    return float(recalls[i]), float(s[i])


MIN_JUDGED_HITS = 500  # below this many hits a wrong-hit share is noise: 200 hits at 8% wrong is +-1.9 points


def pick_threshold(scores: np.ndarray, labels: np.ndarray, share: float) -> float:
    """The lowest threshold at which every stricter threshold with at least MIN_JUDGED_HITS hits also keeps
    the wrong-hit share at or below ``share``: a threshold on a lucky dip of the curve is not picked. Where
    even the MIN_JUDGED_HITS-th best pair is over the share, that pair's score: the strictest point the
    data can judge (``operating_point`` marks it as not meeting its share)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    hits = np.arange(1, len(s) + 1)
    running = np.cumsum(y == 0) / hits
    running[:MIN_JUDGED_HITS - 1] = 0.0  # too few hits to judge
    bad = np.nonzero(running > share)[0]
    last_ok = (bad[0] - 1) if len(bad) else len(s) - 1
    return float(s[max(last_ok, MIN_JUDGED_HITS - 1)])


def export_trees(model) -> dict:
    """sklearn HistGradientBoostingClassifier -> complete binary trees of one depth, for numpy evaluation.

    Reads the fitted predictors' node arrays (a private but long-stable layout); main() checks the
    export against ``decision_function``, so a change in sklearn fails loudly here, never at run time."""
    predictors = [tree[0].nodes for tree in model._predictors]
    depth = max(int(nodes["depth"].max()) for nodes in predictors)
    features, splits, leaves = [], [], []
    for nodes in predictors:
        feature = np.zeros(2 ** depth - 1, dtype=np.int64)
        split = np.full(2 ** depth - 1, SPLIT_INF)
        leaf = np.zeros(2 ** depth)

        def fill(node: int, pos: int, level: int, nodes=nodes, feature=feature, split=split, leaf=leaf) -> None:
            if level == depth:
                leaf[pos - (2 ** depth - 1)] = float(nodes["value"][node])
                return
            if nodes["is_leaf"][node]:  # early leaf: a split that always goes left, same leaf both ways
                fill(node, 2 * pos + 1, level + 1)
                fill(node, 2 * pos + 2, level + 1)
                return
            feature[pos] = nodes["feature_idx"][node]
            split[pos] = nodes["num_threshold"][node]
            fill(int(nodes["left"][node]), 2 * pos + 1, level + 1)
            fill(int(nodes["right"][node]), 2 * pos + 2, level + 1)

        fill(0, 0, 0)
        features.append(feature.tolist())
        splits.append(split.tolist())
        leaves.append(leaf.tolist())
    return {"depth": depth, "init": float(np.ravel(model._baseline_prediction)[0]), "feature": features,
            "threshold": splits, "leaf_value": leaves}


def fit(X: np.ndarray, y: np.ndarray):
    from sklearn.ensemble import HistGradientBoostingClassifier

    names = VERIFIER_FEATURES[:X.shape[1]]
    constraints = [MONOTONIC.get(name, 0) for name in names]
    return HistGradientBoostingClassifier(random_state=SEED, monotonic_cst=constraints, **MODEL).fit(X, y)


def operating_point(share: float, oof: np.ndarray, labels: np.ndarray, cosines: np.ndarray, fold_of: np.ndarray,
                    near_oof: np.ndarray, near_cosines: np.ndarray, near_kind: np.ndarray, min_cosine: float,
                    folds: int) -> dict:
    threshold = pick_threshold(oof, labels, share)
    hits = (oof >= threshold) & (cosines >= min_cosine)
    wrong, recall, n_hits = wrong_share_and_recall(hits, labels)
    per_fold = [wrong_share_and_recall(hits[fold_of == k], labels[fold_of == k]) for k in range(folds)]
    near_hits = (near_oof >= threshold) & (near_cosines >= min_cosine)
    return {"max_wrong_hit_share": share, "threshold": threshold, "meets_share": wrong <= share,
            "out_of_fold": {"wrong_hit_share": round(wrong, 4), "recall": round(recall, 4), "hits": n_hits,
                            "near_miss_hit_rate": round(float(near_hits.mean()), 4),
                            "near_miss_hit_rate_by_kind": {
                                kind: round(float(near_hits[near_kind == kind].mean()), 4)
                                for kind in sorted(set(near_kind.tolist()))}},
            "per_fold": [{"wrong_hit_share": round(w, 4), "recall": round(r, 4), "hits": h} for w, r, h in per_fold]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--embedder", default="sentence-transformers", choices=["sentence-transformers", "onnx"])
    parser.add_argument("--cross-encoder-oof", type=Path, metavar="WORK", default=Path("/tmp/localllm-cross-encoder"),
                        help="where train_cache_cross_encoder.py left oof.npz and near_misses.jsonl")
    parser.add_argument("--cross-encoder-model", type=Path, default=None,
                        help="the final cross-encoder to ship (default: WORK/final.onnx)")
    parser.add_argument("--save-oof", type=Path, help="also write the out-of-fold scores and labels here (.npz)")
    parser.add_argument("--hand-features-only", action="store_true",
                        help="report the trees without the cross-encoder, write nothing")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ASSET)
    parser.add_argument("--train-near-misses", type=int, default=TRAIN_NEAR_MISSES,
                        help="how many of the generated near-misses also train the trees (all are scored)")
    args = parser.parse_args()

    from sklearn.model_selection import GroupKFold

    rows = load_pairs(args.data)
    labels = np.array([int(r["label"]) for r in rows])
    vec_a, vec_b = pair_embeddings(args.data, rows, args.embedder)
    cosines = np.einsum("ij,ij->i", vec_a, vec_b)
    X = feature_matrix(rows, cosines)
    groups = question_groups(rows)
    group_of = {}
    for r, g in zip(rows, groups):
        group_of[r["text_a"]] = group_of[r["text_b"]] = g
    stacked = not args.hand_features_only
    model_file = args.cross_encoder_model or args.cross_encoder_oof / "final.onnx"
    if stacked and not (args.cross_encoder_oof / "oof.npz").exists():
        raise SystemExit(f"no {args.cross_encoder_oof / 'oof.npz'}: run bench/train_cache_cross_encoder.py --epochs 2 "
                         f"--work {args.cross_encoder_oof} first (or pass --hand-features-only)")
    if stacked and not model_file.exists():
        raise SystemExit(f"no {model_file}: finish bench/train_cache_cross_encoder.py (its final model)")
    if stacked:
        from train_cache_cross_encoder import settings_file

        fold_settings = str(np.load(args.cross_encoder_oof / "fold0.npz").get("settings", "unrecorded"))
        final_settings = (settings_file(model_file).read_text(encoding="utf-8").strip()
                          if settings_file(model_file).exists() else "unrecorded")
        if fold_settings != final_settings:
            raise SystemExit(f"the folds in {args.cross_encoder_oof} ({fold_settings}) and {model_file} "
                             f"({final_settings}) were trained differently: the trees would learn another model's "
                             "log-odds. Retrain one of them with bench/train_cache_cross_encoder.py")
        saved = np.load(args.cross_encoder_oof / "oof.npz")
        if np.isnan(saved["logits"]).any():
            raise SystemExit(f"{args.cross_encoder_oof / 'oof.npz'} misses pairs: finish train_cache_cross_encoder.py")
        near = load_pairs(args.cross_encoder_oof / "near_misses.jsonl")
    else:
        questions = sorted(group_of)
        generated = near_miss_pairs(questions, seed=SEED, pool=entity_pool(questions))
        near = random.Random(SEED).sample(generated, min(NEAR_MISSES, len(generated)))
    near_digest = hashlib.sha256("".join(p["text_b"] for p in near).encode()).hexdigest()[:12]
    near_a, near_b = embeddings_of(near_digest, near, args.embedder)
    near_cosines = np.einsum("ij,ij->i", near_a, near_b)
    near_X = feature_matrix(near, near_cosines)
    if stacked:
        X, near_X = np.c_[X, saved["logits"]], np.c_[near_X, saved["near_logits"]]
    near_groups = np.array([group_of[p["text_a"]] for p in near])
    near_kind = np.array([p["kind"] for p in near])
    print(f"{len(rows)} pairs, {labels.mean():.1%} duplicates, {len(set(groups))} question groups "
          f"(largest {np.bincount(groups).max()} pairs), {len(near)} near-misses, {X.shape[1]} features")

    # Near-misses train the trees as "different" pairs beside the Quora ones, in their question's fold.
    all_X = np.r_[X, near_X]
    all_y = np.r_[labels, np.zeros(len(near), dtype=int)]
    all_groups = np.r_[groups, near_groups]
    oof_all = np.zeros(len(all_y))
    fold_all = np.zeros(len(all_y), dtype=int)
    splitter = GroupKFold(n_splits=args.folds, shuffle=True, random_state=SEED)
    # Every near-miss is scored out of fold; --train-near-misses of them also train.
    # (A random subset: the cross-encoder's file lists its near-misses fold by fold.)
    near_trains = np.zeros(len(near), dtype=bool)
    near_trains[np.random.default_rng(SEED).permutation(len(near))[:args.train_near_misses]] = True
    trains = np.r_[np.ones(len(rows), dtype=bool), near_trains]
    for k, (train, test) in enumerate(splitter.split(all_X, all_y, all_groups)):
        train = train[trains[train]]
        oof_all[test] = fit(all_X[train], all_y[train]).predict_proba(all_X[test])[:, 1]
        fold_all[test] = k
    oof, near_oof, fold_of = oof_all[:len(rows)], oof_all[len(rows):], fold_all[:len(rows)]
    if args.save_oof:
        np.savez(args.save_oof, oof=oof, labels=labels, cosines=cosines, fold=fold_of, near_oof=near_oof,
                 near_cosines=near_cosines)

    # The cosine floor: the lowest cosine of any out-of-fold hit at the loosest point, rounded down; below
    # it nothing passes, so the cache can skip the verifier.
    loosest = pick_threshold(oof, labels, max(OPERATING_POINTS))
    accepted = oof >= loosest
    min_cosine = float(np.floor(cosines[accepted].min() * 100) / 100) if accepted.any() else 1.0
    points = [operating_point(share, oof, labels, cosines, fold_of, near_oof, near_cosines, near_kind, min_cosine,
                              args.folds) for share in OPERATING_POINTS]
    curve = {f"{p:.0%}": round(best_recall_at(oof, labels, p)[0], 4) for p in CURVE_POINTS}
    cos_curve = {f"{p:.0%}": round(best_recall_at(cosines, labels, p)[0], 4) for p in CURVE_POINTS}
    baselines = {}
    for cut in (0.90, 0.95):
        b_share, b_recall, b_hits = wrong_share_and_recall(cosines >= cut, labels)
        baselines[f"cosine>={cut:.2f}"] = {"wrong_hit_share": round(b_share, 4), "recall": round(b_recall, 4),
                                           "hits": b_hits, "near_miss_hit_rate":
                                           round(float((near_cosines >= cut).mean()), 4)}

    print(f"\nout-of-fold ({args.folds}-fold, grouped by question), min_cosine {min_cosine:.2f}:")
    print(f"  {'point':>6} {'threshold':>9} {'wrong':>7} {'recall':>7} {'hits':>6} {'near-miss':>9}  per fold "
          "(wrong/recall)")
    for p in points:
        o = p["out_of_fold"]
        spread = "  ".join(f"{f['wrong_hit_share']:.1%}/{f['recall']:.1%}" for f in p["per_fold"])
        print(f"  {p['max_wrong_hit_share']:6.0%} {p['threshold']:9.4f} {o['wrong_hit_share']:7.2%} "
              f"{o['recall']:7.2%} {o['hits']:6d} {o['near_miss_hit_rate']:9.2%}  {spread}"
              + ("" if p["meets_share"] else f"  (no threshold judged on >= {MIN_JUDGED_HITS} hits meets it)"))
    for name, b in baselines.items():
        print(f"  {name:16} wrong {b['wrong_hit_share']:6.2%}  recall {b['recall']:6.2%}  hits {b['hits']}  "
              f"near-miss {b['near_miss_hit_rate']:.2%}")
    curves = [("verifier" + ("" if stacked else " (hand features only)"), curve), ("cosine alone", cos_curve)]
    if stacked:
        curves.append(("cross-encoder alone", {f"{p:.0%}": round(best_recall_at(saved["logits"], labels, p)[0], 4)
                                               for p in CURVE_POINTS}))
    for name, c in curves:
        print(f"  best recall at wrong-hit share, {name:28} " + "  ".join(f"{k}: {v:.1%}" for k, v in c.items()))
    if not stacked:
        return  # a comparison: the daemon's trees read the cross-encoder
    shipped_model = args.output.parent / "cache_cross_encoder.onnx"
    if model_file.resolve() != shipped_model.resolve():
        shutil.copyfile(model_file, shipped_model)

    model = fit(all_X[trains], all_y[trains])
    assert any(p["max_wrong_hit_share"] == DEFAULT_POINT for p in points)
    spec = {
        "format_version": FORMAT_VERSION,
        "model": "gradient-boosted trees (sklearn HistGradientBoostingClassifier, monotonic constraints), padded "
                 "to complete binary trees; log-odds = init + one leaf value per tree; right iff value > threshold",
        "feature_names": VERIFIER_FEATURES,
        "cross_encoder": {"file": shipped_model.name, "sha256": sha256_of_file(shipped_model),
                          "size_bytes": shipped_model.stat().st_size,
                          "base": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), fine-tuned by "
                                  "bench/train_cache_cross_encoder.py, int8 ONNX",
                          "out_of_fold_folds": int(saved["fold"].max()) + 1},
        "antonym_lexicon": {"file": LEXICON_FILE.name, "sha256": load_lexicon().sha256, "pairs": len(load_lexicon()),
                            "source": "WordNet 3.1 antonyms, bench/build_antonym_lexicon.py"},
        "default_wrong_hit_share": DEFAULT_POINT,
        "operating_points": points,
        "min_cosine": min_cosine,
        "embedder": args.embedder,
        "trained_on": {"data": args.data.name, "pairs": len(rows), "positive_share": round(float(labels.mean()), 4),
                       "near_misses_scored": len(near), "near_misses_trained_on": args.train_near_misses,
                       "hyperparameters": MODEL, "monotonic": MONOTONIC, "seed": SEED},
        "validation": {
            "method": f"{args.folds}-fold GroupKFold, groups = connected components of questions (near-misses "
                      "with the question they were made from)",
            "best_recall_at_wrong_hit_share": curve,
            "cosine_only_best_recall_at_wrong_hit_share": cos_curve,
            "cosine_baselines": baselines,
        },
        "trees": export_trees(model),
    }
    check = np.asarray(model.decision_function(all_X[:500]))
    from localllm.store.cache_verifier import DuplicateVerifier

    exported = DuplicateVerifier(spec, assets=args.output.parent).raw_score(all_X[:500])
    assert np.allclose(check, exported, atol=1e-6), float(np.abs(check - exported).max())
    args.output.write_text(json.dumps(spec, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output} ({args.output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
