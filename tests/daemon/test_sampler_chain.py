"""The greedy fast path picks exactly what llama.cpp's own logit-bias + greedy samplers pick.

Each case runs llama.cpp's samplers (through llama-cpp-python, on a candidate array built from the
same float32 logits) beside ``SamplerChain.pick_greedy``: random logits, exact ties, biases that
ban the best token or lift a poor one, a token biased twice. End to end, the batching tests decode
with this path (greedy answers equal alone, banned end tokens run to max_tokens).
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from localllm.daemon.engine.sampler_chain import SamplerChain
from localllm.vocabulary import Sampling

N_VOCAB = 49152


def llama_cpp_greedy(logits: np.ndarray, logit_bias: tuple[tuple[int, float], ...]) -> int:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    try:
        if logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(logit_bias))()
            for slot, (token, bias) in zip(biases, logit_bias, strict=True):
                slot.token, slot.bias = token, (float("-inf") if bias <= -100 else bias)
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_logit_bias(
                len(logits), len(biases), biases))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        data = (llama_cpp.llama_token_data * len(logits))()
        for i, value in enumerate(logits.tolist()):
            data[i].id, data[i].logit, data[i].p = i, value, 0.0
        candidates = llama_cpp.llama_token_data_array(data=data, size=len(logits), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(candidates))
        return data[candidates.selected].id
    finally:
        llama_cpp.llama_sampler_free(chain)


def fast_path(logits: np.ndarray, logit_bias: tuple[tuple[int, float], ...]) -> int:
    chain = SamplerChain(Sampling(temperature=0.0, logit_bias=logit_bias), len(logits), [])
    assert chain.chain is None  # greedy without penalties takes the fast path
    return chain.pick_greedy(logits)


def _cases():
    rng = np.random.default_rng(5)
    for _ in range(6):
        logits = rng.normal(0, 3, N_VOCAB).astype(np.float32)
        best, second = np.argsort(logits)[::-1][:2]
        yield "random", logits, ()
        yield "best banned", logits, ((int(best), -100.0),)
        yield "other tokens banned", logits, ((int(second), -100.0), (int(np.argmin(logits)), -100.0))
        yield "best banned with a lift elsewhere", logits, ((int(best), -100.0), (int(np.argmin(logits)), 3.0))
        yield "best lowered below second", logits, ((int(best), float(logits[second] - logits[best]) - 0.01),)
        yield "poor token lifted", logits, ((int(np.argmin(logits)), 100.0),)
        yield "token biased twice", logits, ((int(second), 0.5), (int(second), float(logits[best] - logits[second])))
    tied = np.zeros(N_VOCAB, dtype=np.float32)
    tied[[17, 300, 40000]] = 2.5
    yield "tie: first of equal maxima", tied, ()
    yield "tie broken by bias", tied, ((17, -1.0),)


@pytest.mark.parametrize(("case", "logits", "logit_bias"), list(_cases()))
def test_fast_greedy_equals_llama_cpp_samplers(case, logits, logit_bias):
    before = logits.copy()
    assert fast_path(logits, logit_bias) == llama_cpp_greedy(logits, logit_bias), case
    assert np.array_equal(logits, before)  # the context's logits are never modified


def test_penalties_and_temperature_use_llama_cpp_chain():
    penalised = SamplerChain(Sampling(temperature=0.0, repeat_penalty=1.3), N_VOCAB, [1, 2, 3])
    sampled = SamplerChain(Sampling(temperature=0.7, seed=1), N_VOCAB, [])
    try:
        assert penalised.chain is not None and sampled.chain is not None
    finally:
        penalised.close()
        sampled.close()
