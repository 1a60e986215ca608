"""One request's sampling settings as a llama.cpp sampler chain.

Each sequence in the batch has its own chain (its own seed, penalties history
and settings), so requests decoded together never influence each other's
choices. The chain order follows llama-cpp-python's and llama-server's:
bias and penalties first, then greedy, or top-k, top-p, min-p, temperature and
a seeded draw.

Greedy decoding without penalties (the common case for tools and the cascade)
skips the chain: llama.cpp's sampler copies the whole vocabulary into a
candidate array for every token (about 0.15 ms for 49k tokens here), where
numpy's argmax over the logits, after the same float32 bias additions, picks the
same token (the first of equal maxima, as llama.cpp's greedy sampler does).
"""

from __future__ import annotations

import ctypes
import random

import numpy as np

from localllm.daemon.engine.grammar import GrammarConstraint
from localllm.vocabulary import Sampling

# How far back the repetition, frequency and presence penalties look (llama.cpp's default).
PENALTY_LAST_N = 64


class SamplerChain:
    def __init__(self, sampling: Sampling, n_vocab: int, prompt_tokens: list[int], *,
                 grammar: GrammarConstraint | None = None, end_token: int = -1):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._n_vocab = n_vocab
        self.grammar = grammar
        self._end_token = end_token  # what a grammar that allows nothing more ends with
        self._candidates = None  # the vocabulary as llama.cpp candidates, for the chain under a grammar
        penalised = (sampling.repeat_penalty != 1.0 or sampling.frequency_penalty != 0.0
                     or sampling.presence_penalty != 0.0)
        # OpenAI's -100 means "never": -inf, as llama-server does.
        logit_bias = [(token, float("-inf") if bias <= -100 else bias) for token, bias in sampling.logit_bias]
        self.chain = None
        if sampling.temperature <= 0 and not penalised:
            self._bias_tokens = np.array([t for t, _ in logit_bias], dtype=np.intp)
            self._bias_values = np.array([b for _, b in logit_bias], dtype=np.float32)
            # Only bans (-100, as clients ban end tokens): the best unbanned logit wins unchanged, so the
            # 49k logits need no copy unless the best one is banned.
            self._banned = (frozenset(t for t, _ in logit_bias)
                            if logit_bias and np.isneginf(self._bias_values).all() else None)
            return
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = self._add
        if logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(logit_bias))()
            for slot, (token, bias) in zip(biases, logit_bias, strict=True):
                slot.token, slot.bias = token, bias
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        if penalised:
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, sampling.repeat_penalty,
                                                       sampling.frequency_penalty, sampling.presence_penalty))
        if sampling.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            # An unseeded request gets a fresh seed: llama.cpp's default seed would make
            # every unseeded request sample alike.
            seed = sampling.seed if sampling.seed is not None else random.SystemRandom().randrange(2**31)
            if sampling.top_k > 0:
                add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        if penalised:
            # The penalties count the end of the prompt too, as llama-server's do.
            for token in prompt_tokens[-PENALTY_LAST_N:]:
                llama_cpp.llama_sampler_accept(self.chain, token)

    def _add(self, sampler) -> None:
        self._llama_cpp.llama_sampler_chain_add(self.chain, sampler)

    def sample(self, context, batch_index: int) -> int:
        """Pick the next token from the logits of batch row ``batch_index`` (and remember it)."""
        if self.grammar is None and self.chain is not None:
            return self._llama_cpp.llama_sampler_sample(self.chain, context, batch_index)
        address = ctypes.addressof(self._llama_cpp.llama_get_logits_ith(context, batch_index).contents)
        logits = np.frombuffer((ctypes.c_float * self._n_vocab).from_address(address), dtype=np.float32)
        if self.grammar is None:
            return self.pick_greedy(logits)
        # As llama-server does: the usual pick first, checked alone; the whole vocabulary is masked only
        # when the grammar refuses it.
        token = self._choose(logits)
        if not self.grammar.allows(token, float(logits[token])):
            masked = self.grammar.mask(logits)
            if not np.isfinite(masked).any():
                return self._end_token  # the grammar allows nothing more: the answer is complete
            token = self._choose(masked)
        self.grammar.accept(token)
        if self.chain is not None:
            self._llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def _choose(self, logits: np.ndarray) -> int:
        """The chain's pick from these logits, without remembering it (accepting is the caller's)."""
        if self.chain is None:
            return self.pick_greedy(logits)
        llama_cpp = self._llama_cpp
        if self._candidates is None:
            buffer = (llama_cpp.llama_token_data * self._n_vocab)()
            self._candidates = (buffer, np.frombuffer(buffer, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]),
                                llama_cpp.llama_token_data_array(data=buffer, size=self._n_vocab, selected=-1,
                                                                 sorted=False),
                                np.arange(self._n_vocab, dtype=np.int32))
        buffer, view, array, ids = self._candidates
        view["id"] = ids  # the chain's samplers sort and cut the array in place
        view["logit"] = logits
        view["p"] = 0.0
        array.size, array.selected, array.sorted = self._n_vocab, -1, False
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        return int(buffer[array.selected].id)

    def pick_greedy(self, logits: np.ndarray) -> int:
        """The greedy choice from one row of float32 logits, after the request's logit_bias."""
        if self._banned is not None:
            best = int(logits.argmax())
            if best not in self._banned:
                return best
        if len(self._bias_tokens):
            logits = logits.copy()
            np.add.at(logits, self._bias_tokens, self._bias_values)  # a token named twice gets both
        return int(logits.argmax())

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
        if self.chain is not None:
            self._llama_cpp.llama_sampler_free(self.chain)  # frees the samplers added to it
            self.chain = None
