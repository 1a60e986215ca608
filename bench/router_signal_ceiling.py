"""Three signals the router does not use, and why (issue 20's router target: APGR >= 0.70 held out).

1. The local model's prefill (prompt perplexity, next-token entropy, the spread over the answer
   letters). Measured here: what one prefill with logits for every position costs on this machine,
   against the router's 5 ms budget, on 40 dev prompts drawn from both benchmarks; and what the signal
   adds (``--prefill-per-subject N``, off by default: about half an hour on two cores for N=60). On up
   to N prompts per MMLU subject and every GSM8K question (``--prefill-gsm8k``), the prefill features
   are stacked on the shipped router's out-of-fold log-odds by a logistic regression, cross-validated
   on the same folds (whole subjects held out), against the router alone and the prefill features
   alone. Features are kept in /tmp, so an interrupted run resumes.
2. GSM8K's strong-model solutions as an auxiliary target. The dev file holds GPT-4's and Mixtral's
   answers; a question whose solution is long or has many steps should be harder for the weak model.
   Printed: the APGR of the TRUE value of each (an oracle no router can have) and of its out-of-fold
   prediction from the prompt (ridge on the router's text features and the embedding), beside a
   logistic regression on the label itself and length alone.
3. Word rarity (wordfreq's Zipf frequencies; only if ``wordfreq`` is installed, it is not a
   dependency): the router's cross-validation with and without five rarity features.

    python bench/router_signal_ceiling.py [--data DIR] [--model GGUF] [--repeats 3] [--prefill-per-subject 60]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_router as tr  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def prefill_cost(model: Path, texts: list[str]) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=2048, n_batch=512, logits_all=True, n_threads=2, verbose=False)
    tokens, seconds = 0, 0.0
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=True)[-2000:]
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        logits = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
        peak = logits.max(axis=1, keepdims=True)
        _ = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]  # what a perplexity feature needs
        seconds += time.perf_counter() - started
        tokens += len(ids)
    per_prompt = seconds / len(texts)
    print(f"1. prefill with every position's logits ({model.name}, 2 threads): {tokens / seconds:.0f} tokens/s, "
          f"{per_prompt * 1e3:.0f} ms for an average dev prompt ({tokens / len(texts):.0f} tokens): "
          f"{per_prompt / 0.005:.0f}x the router's 5 ms budget")


PREFILL_FEATURES = ("mean token NLL", "token NLL sd", "token NLL p90", "next-token entropy",
                    "answer-letter top share", "answer-letter entropy")


def prefill_features(llm, text: str, letters: list[int]) -> list[float]:
    """Six numbers from one prefill: how surprising the prompt is to the local model, how unsure its next
    token is, and (MMLU) how its next-token mass splits over " A".." D" (zeros for GSM8K)."""
    ids = llm.tokenize(text.encode(), add_bos=True)[-2000:]
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
    peak = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
    nll = log_norm[:-1] - logits[np.arange(len(ids) - 1), ids[1:]]
    last = logits[-1] - log_norm[-1]
    probs = np.exp(last)
    entropy = float(-(probs * last).sum())
    letter_share, letter_entropy = 0.0, 0.0
    if text.rstrip().endswith("Answer:"):
        mass = probs[letters]
        split = mass / mass.sum()
        letter_share = float(split.max())
        letter_entropy = float(-(split * np.log(split + 1e-12)).sum())
    return [float(nll.mean()), float(nll.std()), float(np.percentile(nll, 90)), entropy, letter_share,
            letter_entropy]


def prefill_signal(model: Path, prompts: list[tr.Prompt], per_subject: int, gsm8k: int, repeats: int) -> None:
    from llama_cpp import Llama
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(tr.SEED)
    groups = np.array([p.group for p in prompts])
    subset = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(groups == g))[:gsm8k if g == "gsm8k" else per_subject]
        for g in sorted(set(groups))]))
    texts = [prompts[i].text for i in subset]
    digest = hashlib.sha256((model.name + "\x00" + "\x00".join(texts)).encode()).hexdigest()[:12]
    store = Path(f"/tmp/router_prefill_{digest}.npz")
    done: dict[str, list[float]] = {}
    if store.exists():
        saved = np.load(store, allow_pickle=False)
        done = dict(zip(saved["texts"].tolist(), saved["features"].tolist()))
    todo = [t for t in dict.fromkeys(texts) if t not in done]
    if todo:
        llm = Llama(model_path=str(model), n_ctx=2048, n_batch=512, logits_all=True, n_threads=2, verbose=False)
        letters = [llm.tokenize(f" {c}".encode(), add_bos=False)[-1] for c in "ABCD"]
        started = time.perf_counter()
        for n, text in enumerate(todo, 1):
            done[text] = prefill_features(llm, text, letters)
            if n % 200 == 0 or n == len(todo):
                np.savez(store, texts=np.array(list(done)), features=np.array(list(done.values())))
                print(f"  prefill {n}/{len(todo)} {time.perf_counter() - started:.0f} s", file=sys.stderr)
    extra = np.array([done[t] for t in texts])

    every_text = [p.text for p in prompts]
    target = np.array([p.strong and not p.weak for p in prompts], dtype=int)
    weights = tr.training_weights(prompts)
    router = tr.out_of_fold(prompts, np.stack([tr.prompt_features(t) for t in every_text]),
                            tr.embed_prompts(every_text), target, weights, 5, repeats)["router"]
    chosen = [prompts[i] for i in subset]
    kinds = np.array([p.dataset for p in chosen])
    scores = {name: np.zeros((repeats, len(subset))) for name in ("router (shipped, out of fold)",
                                                                  "router + prefill (stacked)", "prefill alone")}
    for r in range(repeats):
        fold = tr.evaluation_folds(prompts, 5, tr.SEED + r)[subset]
        base = router[r, subset][:, None]
        for k, dataset in ((k, d) for k in range(5) for d in ("mmlu", "gsm8k")):  # one stacker per benchmark
            train, test = (fold != k) & (kinds == dataset), (fold == k) & (kinds == dataset)
            mean, sd = extra[train].mean(0), extra[train].std(0) + 1e-9
            z = (extra - mean) / sd
            for name, inputs in (("router + prefill (stacked)", np.hstack([base, z])), ("prefill alone", z)):
                fitted = LogisticRegression(C=1.0, max_iter=5000).fit(
                    inputs[train], target[subset][train], sample_weight=weights[subset][train])
                scores[name][r, test] = fitted.decision_function(inputs[test])
        scores["router (shipped, out of fold)"][r] = router[r, subset]
    scores["length only (chars)"] = np.array([len(t) for t in texts], dtype=float)
    counts = {d: sum(p.dataset == d for p in chosen) for d in ("mmlu", "gsm8k")}
    weak, strong = np.array([p.weak for p in chosen]), np.array([p.strong for p in chosen])
    clean = ~np.array([p.contaminated for p in chosen])
    print("\n1b. each prefill feature alone, APGR with its better sign (in sample: a ceiling, 0.5 = random):")
    for dataset in ("mmlu", "gsm8k"):
        mask = clean & (kinds == dataset)
        best = [max(tr.apgr(v[mask], weak[mask], strong[mask]), tr.apgr(-v[mask], weak[mask], strong[mask]))
                for v in extra.T]
        print(f"   {dataset:6} " + ", ".join(f"{n} {b:.3f}" for n, b in zip(PREFILL_FEATURES, best)))
    tr.print_table(f"1b. prefill signal, out-of-fold APGR on {counts['mmlu']} MMLU prompts (up to {per_subject} per "
                   f"subject) and {counts['gsm8k']} GSM8K ({repeats} fold seeds; features: "
                   f"{', '.join(PREFILL_FEATURES)}):", tr.apgr_table(chosen, scores))


def auxiliary_targets(data: Path, prompts: list[tr.Prompt]) -> None:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold

    with (data / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as handle:
        answers = {row["prompt"]: row for row in csv.DictReader(handle)}
    gsm = [p for p in prompts if p.dataset == "gsm8k"]
    texts = [p.text for p in gsm]
    features = np.stack([tr.prompt_features(t) for t in texts])
    inputs = np.hstack([(features - features.mean(0)) / (features.std(0) + 1e-9), tr.embed_prompts(texts)])
    strong_answers = [answers[t][f"{tr.STRONG}_response"] for t in texts]
    targets = {
        "strong answer's '=' signs": np.log1p([a.count("=") for a in strong_answers]),
        "strong answer's characters": np.log([len(a) + 1 for a in strong_answers]),
        "strong answer's numbers": np.log1p([len(re.findall(r"\d+(?:\.\d+)?", a)) for a in strong_answers]),
    }
    weak, strong = np.array([p.weak for p in gsm]), np.array([p.strong for p in gsm])
    clean = ~np.array([p.contaminated for p in gsm])

    def scored(values: np.ndarray) -> float:
        return tr.apgr(values[clean], weak[clean], strong[clean])

    def out_of_fold(fit_predict) -> float:
        runs = []
        for seed in range(5):
            oof = np.zeros(len(gsm))
            for train, test in KFold(5, shuffle=True, random_state=seed).split(inputs):
                oof[test] = fit_predict(train, test)
            runs.append(scored(oof))
        return float(np.mean(runs))

    print("2. GSM8K, APGR (5-fold x 5 seeds where predicted):")
    for name, y in targets.items():
        predicted = out_of_fold(lambda train, test, y=y: Ridge(alpha=10.0).fit(inputs[train], y[train])
                                .predict(inputs[test]))
        print(f"   {name:28} true value (oracle) {scored(y):.3f}   predicted from the prompt {predicted:.3f}")
    label = (strong & ~weak).astype(int)
    direct = out_of_fold(lambda train, test: LogisticRegression(C=0.1, max_iter=3000)
                         .fit(inputs[train], label[train]).decision_function(inputs[test]))
    print(f"   {'logistic regression on the label':28} {direct:.3f};  prompt length alone "
          f"{scored(np.array([len(t) for t in texts], dtype=float)):.3f}")


def rarity(prompts: list[tr.Prompt], repeats: int) -> None:
    try:
        import wordfreq
    except ImportError:
        print("3. word rarity: skipped (pip install wordfreq to run it)")
        return
    zipf: dict[str, float] = {}

    def row(text: str) -> list[float]:
        words = [w.lower() for w in _WORD.findall(text[:2000])] or ["the"]
        z = np.array([zipf.setdefault(w, wordfreq.zipf_frequency(w, "en")) for w in words])
        return [float(z.mean()), float(np.mean(z < 3)), float(np.mean(z < 2)), float(np.percentile(z, 10)),
                float(np.sum(z < 2.5))]

    texts = [p.text for p in prompts]
    embeddings = tr.embed_prompts(texts)
    features = np.stack([tr.prompt_features(t) for t in texts])
    target = np.array([p.strong and not p.weak for p in prompts], dtype=int)
    weights = tr.training_weights(prompts)
    extra = np.array([row(t) for t in texts])
    table = {}
    for name, matrix in (("router", features), ("router + rarity", np.hstack([features, extra]))):
        table[name] = tr.out_of_fold(prompts, matrix, embeddings, target, weights, 5, repeats)["router"]
    tr.print_table(f"3. word rarity, out-of-fold APGR (5-fold x {repeats} seeds):", tr.apgr_table(prompts, table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=tr.DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill-per-subject", type=int, default=0,
                        help="also cross-validate the prefill signal on up to N prompts per MMLU subject (slow)")
    parser.add_argument("--prefill-gsm8k", type=int, default=660, help="GSM8K questions in that run")
    parser.add_argument("--only-prefill", action="store_true", help="skip sections 2 and 3")
    args = parser.parse_args()
    prompts = tr.load_prompts(args.data)
    texts = [p.text for p in prompts]
    if args.model.exists():
        prefill_cost(args.model, [texts[i] for i in np.random.default_rng(0).choice(len(texts), 40, replace=False)])
        if args.prefill_per_subject:
            prefill_signal(args.model, prompts, args.prefill_per_subject, args.prefill_gsm8k, args.repeats)
    else:
        print(f"1. prefill cost: skipped ({args.model} is missing)")
    if args.only_prefill:
        return
    auxiliary_targets(args.data, prompts)
    rarity(prompts, args.repeats)


if __name__ == "__main__":
    main()
