"""The guard's NER model three ways, side by side in one run, on the latency prompts.

    python bench/guard_ner_paths.py [--prompts 200] [--rounds 3]

Each prompt is tokenized once and then run, in turn, through:

- ``spacy``: spaCy's own recognizer (thinc's layers, spaCy's per-token C loop), cut to the guard's
  labels as shipped before the numpy decoder;
- ``numpy decoder``: the same thinc layers, moves decoded by ``entity_decoder``;
- ``numpy decoder + onnx encoder``: what the guard runs (``entity_encoder`` for the layers).

Interleaving the three per prompt keeps the machine's drift out of the ratios. Prints p50/p99 per
path (tokenizing excluded, one BLAS thread as in the daemon) and whether all three found the same
entities on every prompt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guard_quality  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from localllm.decision.guard.detector import _SPACY_LABELS
    from localllm.decision.guard.entity_decoder import GreedyEntityDecoder
    from localllm.decision.guard.entity_model import (
        _keep_labels,
        _load_pipeline,
        _numpy_decoding,
        _onnx_encoder,
        _spacy_decoding,
    )

    labels = frozenset(_SPACY_LABELS)
    paths = {}
    for name in ("spacy", "numpy decoder", "numpy decoder + onnx encoder"):
        nlp = _load_pipeline()  # cutting labels rewires a model in place: one pipeline per path
        recognizer = _keep_labels(nlp, nlp.get_pipe("ner"), labels)
        if name == "spacy":
            paths[name] = _spacy_decoding(recognizer)
        else:
            encoder = _onnx_encoder(nlp, recognizer) if "onnx" in name else None  # as the guard builds it
            if "onnx" in name and encoder is None:
                raise SystemExit("the onnx encoder could not be built (see the warning above)")
            paths[name] = _numpy_decoding(GreedyEntityDecoder(recognizer, encoder))
    tokenizer = nlp.make_doc

    prompts = guard_quality.latency_prompts(guard_quality.load_records(guard_quality.DEFAULT_DATA), n=args.prompts)
    times: dict[str, list[float]] = {name: [] for name in paths}
    differing = 0
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(args.rounds):
            for prompt in prompts:
                found = []
                for name, entities in paths.items():
                    doc = tokenizer(prompt)
                    start = time.perf_counter()
                    found.append(entities(doc))
                    times[name].append((time.perf_counter() - start) * 1000)
                differing += any(f != found[0] for f in found[1:])

    base = statistics.median(times["spacy"])
    print(f"{len(prompts)} prompts of ~{statistics.mean(map(len, prompts)):.0f} chars, {args.rounds} rounds, "
          f"tokenizing excluded")
    for name, samples in times.items():
        p50 = statistics.median(samples)
        p99 = sorted(samples)[int(0.99 * (len(samples) - 1))]
        print(f"  {name:30s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({p50 / base:.2f}x spaCy's)")
    print(f"prompts where the paths found different entities: {differing}")
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
