"""Continuous batching over llama.cpp: many requests decoded together, one step at a time.

The engine's context holds ``n_parallel`` sequences (slots). Each step builds
one ``llama_batch``: first one token for every slot that is generating, then
newcomers' prompts, oldest first, so running streams never stall for more than
one chunk of someone else's prompt. How many prompts share a step is
``engine.prompt_packing``: "all" fills the batch; "auto" adds a further prompt
only when the measured cost of a step (``StepCost``) says that gets first
tokens out sooner on average. After ``llama_decode`` every slot whose logits
came out samples its next token with its own sampler chain.

Prefix reuse: a slot keeps its tokens' KV cells when its request ends. A new
request takes the free slot whose cached tokens share the longest prefix with
its prompt, and before feeding its prompt it copies a longer prefix from any
other slot, busy or idle (``llama_memory_seq_cp`` copies that sequence's KV
stream, then the copy is cut back to the shared prefix). A shared system
prompt or the earlier turns of a conversation are then evaluated once.

Answers do not depend on the batch: with q8_0 in the KV cache (values, or
keys and values) llama.cpp's CPU attention takes one code path for any batch
shape, every matmul row is computed alike, and each sequence's cells stay in
position order in its own stream. tests/daemon/test_batching.py holds this to
bit-identical greedy text.

Everything here runs on the scheduler's worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from localllm.daemon.engine.confidence import ConfidenceMeter
from localllm.daemon.engine.energy import EnergyMeter, nvml_energy_counter
from localllm.daemon.engine.llama_engine import GenerationJob, LlamaEngine
from localllm.daemon.engine.sampler_chain import SamplerChain
from localllm.daemon.engine.step_cost import StepCost
from localllm.daemon.engine.token_text import TokenText
from localllm.errors import LocalLLMError, ServiceUnavailable
from localllm.vocabulary import Finished, TextDelta, TokenLogprob

log = logging.getLogger(__name__)

# Sent through ``emit`` after a request's last event (Finished, or an error, or a cancel).
END_OF_STREAM = object()

# Copying another sequence's KV stream costs a buffer copy of the whole stream;
# below this many tokens saved, evaluating them again is as cheap.
MIN_PREFIX_COPY = 16

# Timed at load to seed the step-cost line: 1 token and this many (or n_batch), fastest of a few tries.
_PROBE_TOKENS = 32
_PROBE_TRIES = 3

Emit = Callable[[object], None]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix; binary search over slice comparisons (done in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class _Request:
    job: GenerationJob
    emit: Emit
    sampler: SamplerChain
    text: TokenText
    confidence: ConfidenceMeter | None
    order: int
    generated: int = 0
    energy: float = 0.0  # joules: its share of each step it was in, by tokens
    pending: int | None = None  # sampled, shown to the client, not yet in the KV cache
    logprobs: list = field(default_factory=list)  # TokenLogprob of tokens whose text is not sent yet

    @property
    def prompt(self) -> list[int]:
        return self.job.prompt_tokens


@dataclass
class _Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this sequence holds
    request: _Request | None = None
    last_used: float = 0.0
    feeding: int = 0  # tokens of this slot in the batch being decoded


class BatchDecoder:
    def __init__(self, engine: LlamaEngine):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.engine = engine
        self.n_batch = engine.settings.n_batch
        self._ctx = engine.context.ctx
        self._memory = engine.context.memory
        self._n_vocab = engine.n_vocab
        self.slots = [_Slot(seq_id) for seq_id in range(engine.settings.n_parallel)]
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._admitted = 0
        # Prompt tokens taken from other sequences' cells rather than evaluated (for /health and tests).
        self.reused_tokens = 0
        self.step_cost = StepCost()
        # With a GPU backend llama_decode may return before the work is done (even with no layers
        # offloaded, large matmuls can go to the GPU): wait for it so steps are timed right.
        self._wait_for_decode = bool(llama_cpp.llama_supports_gpu_offload())
        offloaded = self._wait_for_decode and engine.settings.gpu_layers != 0
        self.energy = EnergyMeter(engine.settings.threads, engine.settings.watts_per_core,
                                  gpu_millijoules=nvml_energy_counter() if offloaded else None)
        self._copied_streams = False  # a KV stream copy is pending in this step (its cost is not tokens')
        self._pack_all_prompts = engine.settings.prompt_packing == "all"
        if not self._pack_all_prompts:
            self._probe_step_cost()

    def _probe_step_cost(self) -> None:
        """Warm the model up, then time a 1-token and a 32-token step in sequence 0 (emptied after),
        so the first burst of requests is already scheduled by what a step costs here."""
        sizes = sorted({1, min(_PROBE_TOKENS, self.n_batch)})
        self._timed_decode([(0, 0, 0, True)])  # the first decode pays one-time set-up: not timed
        self._llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
        for size in sizes:
            fastest = math.inf  # the least disturbed of a few tries: one preempted timing must not decide
            for _ in range(_PROBE_TRIES):
                elapsed = self._timed_decode([(i % self._n_vocab, i, 0, i == size - 1) for i in range(size)])
                self._llama_cpp.llama_memory_seq_rm(self._memory, 0, -1, -1)
                if elapsed is None:
                    log.warning("a timing decode at load failed; prompts are packed together until steps "
                                "are timed")
                    return
                fastest = min(fastest, elapsed)
            self.step_cost.observe(size, fastest)

    def _timed_decode(self, tokens: list[tuple[int, int, int, bool]]) -> float | None:
        """Decode (token, position, seq_id, wants_logits) rows; seconds taken, or None if refused."""
        for i, (token, position, seq_id, wants_logits) in enumerate(tokens):
            self._put(i, token, position, seq_id, wants_logits)
        self._batch.n_tokens = len(tokens)
        started = time.perf_counter()
        if self._llama_cpp.llama_decode(self._ctx, self._batch) != 0:
            return None
        if self._wait_for_decode:
            self._llama_cpp.llama_synchronize(self._ctx)
        return time.perf_counter() - started

    # -- admission ---------------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(1 for slot in self.slots if slot.request is not None)

    @property
    def has_free_slot(self) -> bool:
        return any(slot.request is None for slot in self.slots)

    def admit(self, job: GenerationJob, emit: Emit) -> None:
        """Give ``job`` the free slot whose cache shares most of its prompt (ties: least recently used)."""
        prompt = job.prompt_tokens
        usable = len(prompt) - 1  # the last prompt token is always evaluated: its logits start the answer
        # (shared prefix, least recently used, lowest id): seq ids are unique, so slots never compare.
        keep, _recency, _seq, slot = max((min(common_prefix_length(s.cached, prompt), usable), -s.last_used,
                                          -s.seq_id, s) for s in self.slots if s.request is None)
        self._truncate(slot, keep)
        self._admitted += 1
        slot.request = _Request(
            job=job, emit=emit,
            sampler=SamplerChain(job.sampling, self._n_vocab, prompt, grammar=self._grammar_for(job),
                                 end_token=self.engine.end_token),
            text=TokenText(job.sampling.stop),
            confidence=ConfidenceMeter() if job.measure_confidence else None,
            order=self._admitted,
        )
        self.reused_tokens += keep

    def _grammar_for(self, job: GenerationJob):
        grammar = job.sampling.grammar
        return self.engine.grammars.constraint(grammar, self._n_vocab) if grammar else None

    # -- one step ------------------------------------------------------------------

    def step(self) -> None:
        """Decode one batch: a token for each generating slot, then prompt chunks of newcomers."""
        for slot in self.slots:
            if slot.request is not None and slot.request.job.cancel.is_set():
                self._release(slot)
        batch = self._batch
        outputs: list[tuple[_Slot, int]] = []
        n = 0
        for slot in self.slots:
            request = slot.request
            if request is not None and request.pending is not None:
                self._put(n, request.pending, len(slot.cached), slot.seq_id, True)
                outputs.append((slot, n))
                slot.feeding = 1
                n += 1
        decoding, first_tokens = n, 0
        feeding = sorted((s for s in self.slots if s.request is not None and s.request.pending is None),
                         key=lambda s: s.request.order)
        for index, slot in enumerate(feeding):
            if n >= self.n_batch:
                break
            self._reuse_prefix(slot)
            remaining = slot.request.prompt[len(slot.cached):]
            chunk = remaining[:self.n_batch - n]
            if not (self._pack_all_prompts or self.step_cost.worth_adding(
                    len(chunk), first_tokens, decoding, waiting=len(feeding) - index)):
                break  # first come, first served: nobody younger overtakes
            start = len(slot.cached)
            for offset, token in enumerate(chunk):
                self._put(n + offset, token, start + offset, slot.seq_id, False)
            n += len(chunk)
            slot.feeding = len(chunk)
            if len(chunk) == len(remaining):
                batch.logits[n - 1] = 1
                outputs.append((slot, n - 1))
                first_tokens += 1
        if n == 0:
            return
        batch.n_tokens = n
        reading = self.energy.start()
        started = time.perf_counter()
        status = self._llama_cpp.llama_decode(self._ctx, batch)
        copied_streams, self._copied_streams = self._copied_streams, False
        if status != 0:
            self._decode_failed(status)
            return
        if self._wait_for_decode:
            self._llama_cpp.llama_synchronize(self._ctx)
        if not copied_streams:
            self.step_cost.observe(n, time.perf_counter() - started)
        joules = self.energy.joules_since(reading)
        for slot in self.slots:
            if slot.feeding:
                request = slot.request
                request.energy += joules * slot.feeding / n
                if request.pending is not None:
                    slot.cached.append(request.pending)
                    request.pending = None
                else:
                    slot.cached.extend(request.prompt[len(slot.cached):len(slot.cached) + slot.feeding])
                slot.feeding = 0
        for slot, row in outputs:
            self._next_token(slot, row)

    def _put(self, i: int, token: int, position: int, seq_id: int, wants_logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = wants_logits

    def _reuse_prefix(self, slot: _Slot) -> None:
        """Copy the longest prefix of this slot's prompt that another sequence already holds."""
        prompt = slot.request.prompt
        usable = len(prompt) - 1
        best, source = len(slot.cached) + MIN_PREFIX_COPY - 1, None
        if best >= usable:
            return
        for other in self.slots:
            if other is not slot and len(other.cached) > best:
                shared = min(common_prefix_length(other.cached, prompt), usable)
                if shared > best:
                    best, source = shared, other
        if source is None:
            return
        llama_cpp = self._llama_cpp
        # Across streams llama.cpp copies whole sequences only (done at the next decode).
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, -1, -1)
        self._copied_streams = True
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, best, -1)
        self.reused_tokens += best - len(slot.cached)
        slot.cached = prompt[:best]

    def _next_token(self, slot: _Slot, row: int) -> None:
        request = slot.request
        logits = None
        if request.confidence is not None or request.job.logprobs is not None:
            # Copied: the sampler may write biases into the row, and the next decode overwrites it.
            logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self._ctx, row),
                                           shape=(self._n_vocab,)).copy()
        token = request.sampler.sample(self._ctx, row)
        if self.engine.ends_generation(token):
            self._finish(slot, "stop")
            return
        request.generated += 1
        if request.confidence is not None:
            request.confidence.observe(logits, token)
        piece = self.engine.piece(token)
        if request.job.logprobs is not None:
            request.logprobs.append(token_logprob(logits, token, request.job.logprobs, self.engine.piece))
        text = request.text.push(piece)
        if text:
            request.emit(TextDelta(text, tuple(request.logprobs)))
            request.logprobs.clear()
        if request.text.stopped:
            self._finish(slot, "stop")
        elif request.generated >= request.job.max_tokens or len(slot.cached) + 1 >= self.engine.n_ctx:
            self._finish(slot, "length")
        else:
            request.pending = token

    # -- endings -------------------------------------------------------------------

    def _finish(self, slot: _Slot, reason: str) -> None:
        request = slot.request
        tail = request.text.finish()
        if tail:
            request.emit(TextDelta(tail, tuple(request.logprobs)))
        confidence = request.confidence
        request.emit(Finished(
            reason, len(request.prompt), request.generated,
            confidence.mean_logprob if confidence else None, confidence.mean_entropy if confidence else None,
            energy_joules=round(request.energy, 6), energy_source=self.energy.source))
        self._release(slot)

    def _release(self, slot: _Slot, error: LocalLLMError | None = None) -> None:
        request = slot.request
        slot.request = None
        slot.feeding = 0
        slot.last_used = time.monotonic()
        request.sampler.close()
        if error is not None:
            request.emit(error)
        request.emit(END_OF_STREAM)

    def _truncate(self, slot: _Slot, keep: int) -> None:
        if keep < len(slot.cached):
            self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
            slot.cached = slot.cached[:keep]

    def _decode_failed(self, status: int) -> None:
        """llama_decode refused the batch (1: no room in the KV cache; <0 or 2: failed or aborted).
        Roll back what it may have stored; free idle caches and retry if it was room, else fail."""
        for slot in self.slots:
            if slot.feeding:
                self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, len(slot.cached), -1)
                slot.feeding = 0
        idle = [slot for slot in self.slots if slot.request is None and slot.cached]
        if status == 1 and idle:
            log.warning("KV cache full; dropping %d idle cached prefixes", len(idle))
            for slot in idle:
                self._truncate(slot, 0)
            return
        log.error("llama_decode failed with status %d; failing the requests in this batch", status)
        for slot in self.slots:
            if slot.request is not None:
                self.fail(slot, ServiceUnavailable(
                    f"The engine could not decode this batch (llama.cpp status {status}); retry the request. "
                    "If it repeats, lower engine.n_parallel or engine.n_ctx."))

    def fail(self, slot: _Slot, error: LocalLLMError) -> None:
        """End the slot's request with ``error`` and forget its cache (its state is in doubt)."""
        self._truncate(slot, 0)
        self._release(slot, error)

    def cancel_all(self) -> None:
        for slot in self.slots:
            if slot.request is not None:
                self._release(slot)

    def close(self) -> None:
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None


def token_logprob(logits: np.ndarray, token: int, top: int, piece) -> TokenLogprob:
    """``token``'s log-probability under ``logits`` and the ``top`` most likely tokens, as OpenAI reports
    them (text, log-probability, UTF-8 bytes)."""
    shifted = logits.astype(np.float64) - float(logits.max())
    log_probs = shifted - np.log(np.exp(shifted).sum())

    def described(index: int) -> tuple[str, float, tuple[int, ...]]:
        raw = piece(int(index))
        return raw.decode("utf-8", "replace"), float(log_probs[index]), tuple(raw)

    best = np.argpartition(-log_probs, top)[:top] if top else np.array([], dtype=np.int64)
    best = best[np.argsort(-log_probs[best])]
    text, logprob, raw = described(token)
    return TokenLogprob(text, logprob, raw, tuple(described(index) for index in best))
