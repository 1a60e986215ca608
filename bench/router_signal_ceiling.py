"""Three signals the router does not use, and why (issue 20's router target: APGR >= 0.70 held out).

1. The local model's prefill (prompt perplexity, next-token entropy, the spread over the answer
   letters). Measured here: what one prefill with logits for every position costs on this machine,
   against the router's 5 ms budget, on 40 dev prompts drawn from both benchmarks. The signal itself
   was not cross-validated: computing it for the 9,864 dev prompts would take about 90 minutes on two
   cores at the rate printed.
2. GSM8K's strong-model solutions as an auxiliary target. The dev file holds GPT-4's and Mixtral's
   answers; a question whose solution is long or has many steps should be harder for the weak model.
   Printed: the APGR of the TRUE value of each (an oracle no router can have) and of its out-of-fold
   prediction from the prompt (ridge on the router's text features and the embedding), beside a
   logistic regression on the label itself and length alone.
3. Word rarity (wordfreq's Zipf frequencies; only if ``wordfreq`` is installed, it is not a
   dependency): the router's cross-validation with and without five rarity features.

    python bench/router_signal_ceiling.py [--data DIR] [--model GGUF] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
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
    args = parser.parse_args()
    prompts = tr.load_prompts(args.data)
    texts = [p.text for p in prompts]
    if args.model.exists():
        prefill_cost(args.model, [texts[i] for i in np.random.default_rng(0).choice(len(texts), 40, replace=False)])
    else:
        print(f"1. prefill cost: skipped ({args.model} is missing)")
    auxiliary_targets(args.data, prompts)
    rarity(prompts, args.repeats)


if __name__ == "__main__":
    main()
