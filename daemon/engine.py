"""One GGUF model in llama.cpp: load, render chat prompts, tokenize, generate.

Every method here blocks; callers run them off the event loop (the scheduler's
worker thread owns generation, tokenizing runs in an executor). llama.cpp's
vocabulary is read-only after load, so tokenizing may run beside generation.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localllm.config import EngineSettings
from localllm.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable

from .confidence import ConfidenceMeter

log = logging.getLogger(__name__)

# llama.cpp's own server defaults, used where a request leaves a setting out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.0


@dataclass(frozen=True)
class Sampling:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class GenerationJob:
    """One request for tokens; ``cancel`` stops generation before the next token."""

    prompt_tokens: list[int]
    max_tokens: int
    sampling: Sampling
    cancel: threading.Event = field(default_factory=threading.Event)
    # Report mean log-probability and entropy (for the cascade): a softmax over the
    # vocabulary per token, so only when someone will judge the answer.
    measure_confidence: bool = False


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    # How sure the model was (local generation only): for the confidence cascade.
    mean_logprob: float | None = None
    mean_entropy: float | None = None


class ModelLoadError(ServiceUnavailable):
    code = "model_load_failed"


class LlamaEngine:
    """Owns one ``llama_cpp.Llama``. Not thread-safe for generation: one caller at a time."""

    def __init__(self, name: str, path: Path, settings: EngineSettings):
        self.name = name
        self.path = path
        self.settings = settings
        self._llm = None
        self._chat_formatter = None

    def load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        log.info("loading model %s from %s (n_ctx=%d, threads=%d, gpu_layers=%s)",
                 self.name, self.path, self.settings.n_ctx, self.settings.threads, self.settings.n_gpu_layers)
        try:
            self._llm = Llama(
                model_path=str(self.path),
                n_ctx=self.settings.n_ctx,
                n_threads=self.settings.threads,
                n_threads_batch=self.settings.threads,
                n_batch=self.settings.n_batch,
                n_gpu_layers=self.settings.gpu_layers,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            raise ModelLoadError(
                f"Could not load model {self.name!r} from {self.path}: {exc}. "
                "Check the file with `localllm models info`, or pull it again.", retry_after_s=30) from None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template:
            # The GGUF's own template, rendered in jinja2's immutable sandbox (as
            # llama-cpp-python does since CVE-2024-34359).
            model = self._llm._model
            eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
            self._chat_formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
            )

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def n_ctx(self) -> int:
        return self._llm.n_ctx() if self._llm else self.settings.n_ctx

    @property
    def has_chat_template(self) -> bool:
        return self._chat_formatter is not None

    def render_chat(self, messages: list[dict]) -> str:
        if self._chat_formatter is None:
            raise InvalidRequest(
                f"Model {self.name!r} has no chat template in its GGUF metadata; use /v1/completions "
                "with a prompt you format yourself, or pick a chat model.", param="model")
        try:
            return self._chat_formatter(messages=messages).prompt
        except Exception as exc:  # jinja2 errors and the template's own raise_exception()
            raise InvalidRequest(f"The model's chat template rejected these messages: {exc}",
                                 param="messages") from None

    def tokenize(self, text: str) -> list[int]:
        # special=True so the template's control tokens (<|im_start|> ...) become single tokens.
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        bos = self._llm.token_bos()
        if len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            del tokens[0]  # the template wrote its own BOS
        return tokens

    def check_fits(self, prompt_tokens: int, max_tokens: int | None, *, shrink: bool = False) -> int:
        """Return the max_tokens to use; reject prompts that cannot fit the context. With ``shrink``
        (a request meant for a bigger upstream, answered here instead) a max_tokens beyond the
        context is cut to what fits rather than refused."""
        n_ctx = self.n_ctx
        if prompt_tokens >= n_ctx:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_tokens} tokens but model {self.name!r} has a context of {n_ctx} "
                f"tokens. Shorten the prompt, or raise engine.n_ctx.", param="messages")
        room = n_ctx - prompt_tokens
        if max_tokens is None:
            return min(room, self.settings.default_max_tokens)
        if max_tokens > room and shrink:
            return room
        if max_tokens > room:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_tokens} tokens and max_tokens asks for {max_tokens} more, "
                f"but model {self.name!r} has a context of {n_ctx} tokens. Lower max_tokens to at most {room}.",
                param="max_tokens")
        return max_tokens

    def generate(self, job: GenerationJob) -> Iterator[TextDelta | Finished]:
        """Yield text as it is produced, then one Finished. Stops early once job.cancel is set."""
        from llama_cpp import StoppingCriteriaList

        sampled = 0
        confidence = ConfidenceMeter()

        import llama_cpp

        n_vocab = self._llm.n_vocab()
        ctx = self._llm._ctx.ctx

        def count_and_check_cancel(ids, _scores) -> bool:
            nonlocal sampled
            sampled += 1
            if not job.measure_confidence:
                return job.cancel.is_set()
            # llama-cpp-python no longer copies logits out (``_scores`` is zeros without
            # logits_all); the row the token was just sampled from is still in the context.
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            confidence.observe(ids, logits)
            return job.cancel.is_set()

        s = job.sampling
        # llama-cpp-python derives an unseeded run's seed from a fixed one, so every
        # unseeded request would sample the same way; draw a fresh seed instead.
        seed = s.seed if s.seed is not None else random.SystemRandom().randrange(2**31)
        # Evaluate every prompt from scratch. llama-cpp-python would otherwise reuse the
        # previous request's KV cache for a shared prefix, and logits computed in a
        # different batch shape differ in the last bits: greedy answers to the same
        # prompt would then depend on what ran before. Prefix reuse that keeps answers
        # identical belongs to the batching scheduler.
        self._llm.reset()
        stream = self._llm.create_completion(
            prompt=job.prompt_tokens,
            max_tokens=job.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=seed,
            stop=list(s.stop),
            stream=True,
            stopping_criteria=StoppingCriteriaList([count_and_check_cancel]),
        )
        finish_reason = "length"
        try:
            for chunk in stream:
                if job.cancel.is_set():
                    return
                choice = chunk["choices"][0]
                if choice["text"]:
                    yield TextDelta(choice["text"])
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        finally:
            stream.close()
        if job.cancel.is_set():
            return
        # The token that ended generation (end-of-sequence or the end of a stop
        # sequence) is sampled but not part of the answer.
        # llama-cpp-python samples one token past max_tokens before it notices the limit.
        completion_tokens = max(sampled - 1, 0) if finish_reason == "stop" else min(sampled, job.max_tokens)
        yield Finished(finish_reason, len(job.prompt_tokens), completion_tokens, confidence.mean_logprob,
                       confidence.mean_entropy)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
