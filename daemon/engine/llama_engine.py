"""One GGUF model in llama.cpp: load it with a context for several sequences,
render chat prompts, tokenize, turn tokens back into bytes.

Generation lives in the batching scheduler (``scheduler.py``), which owns
the context and decodes many sequences in one ``llama_decode`` call. Every
method here blocks; callers run them off the event loop. llama.cpp's vocabulary
is read-only after load, so tokenizing may run beside generation.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from localllm.config import EngineSettings
from localllm.daemon.engine.fallback_templates import family_format
from localllm.daemon.engine.grammar import GrammarLibrary
from localllm.daemon.engine.model_embeddings import ModelEmbedder
from localllm.daemon.engine.tool_calls import Format, template_format
from localllm.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable
from localllm.vocabulary import Sampling

log = logging.getLogger(__name__)

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
    # Each token's log-probability and this many most likely alternatives (None: not asked for).
    logprobs: int | None = None


class ModelLoadError(ServiceUnavailable):
    code = "model_load_failed"


class LlamaEngine:
    """Owns one llama.cpp model and its context: ``n_parallel`` sequences of ``n_ctx`` tokens each."""

    def __init__(self, name: str, path: Path, settings: EngineSettings):
        self.name = name
        self.path = path
        self.settings = settings
        self.model = None  # llama_cpp._internals.LlamaModel
        self.grammars: GrammarLibrary | None = None  # parsed grammars for this model's vocabulary
        self.tool_format: Format = "json"  # how this model is shown tools and writes calls
        self.context = None  # llama_cpp._internals.LlamaContext
        self._chat_formatter = None
        self._pieces: dict[int, bytes] = {}
        self._ends_generation: dict[int, bool] = {}
        self._pieces_lock = threading.Lock()
        self.embedder = ModelEmbedder(self)  # its own context, made on the first embedding request

    def load(self) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        set_verbose(False)  # llama.cpp's own log: errors only (its debug output costs time per decode)

        s = self.settings
        log.info("loading model %s from %s (n_ctx=%d x %d sequences, threads=%d, gpu_layers=%s)",
                 self.name, self.path, s.n_ctx, s.n_parallel, s.threads, s.n_gpu_layers)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = s.gpu_layers
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = s.n_ctx * s.n_parallel
        context_params.n_batch = s.n_batch
        context_params.n_ubatch = s.n_batch
        context_params.n_seq_max = s.n_parallel
        # One KV stream per sequence. In a unified buffer a sequence's cells end up out of
        # position order once others free cells, and attention sums cells in buffer order:
        # answers would then depend on what ran before. Per-sequence streams stay in order.
        context_params.kv_unified = False
        context_params.n_threads = s.threads
        context_params.n_threads_batch = s.threads
        context_params.no_perf = True
        # "f16-q8_0": keys f16, values q8_0. llama.cpp's CPU attention uses its tiled (long prompts)
        # and split-KV (one row over 512+ cells) kernels only when keys and values are both f16, and
        # those round differently from the one-row kernel: any q8_0 half keeps every batch shape on
        # one path.
        key_type, _, value_type = s.kv_cache_type.partition("-")
        context_params.type_k = getattr(llama_cpp, f"GGML_TYPE_{key_type.upper()}")
        context_params.type_v = getattr(llama_cpp, f"GGML_TYPE_{(value_type or key_type).upper()}")
        if s.kv_cache_type != "f16":
            # A quantized V cache needs flash attention; say so at load rather than guess.
            context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        try:
            self.model = _internals.LlamaModel(path_model=str(self.path), params=model_params, verbose=False)
            self.context = _internals.LlamaContext(model=self.model, params=context_params, verbose=False)
        except (ValueError, OSError, RuntimeError) as exc:
            self.close()
            raise ModelLoadError(
                f"Could not load model {self.name!r} from {self.path}: {exc}. Check the file with "
                "`localllm models info`, pull it again, or lower engine.n_ctx / engine.n_parallel if memory "
                "is short.", retry_after_s=30) from None
        self.grammars = GrammarLibrary(self.model.vocab)
        metadata = self.model.metadata()
        template = metadata.get("tokenizer.chat_template")
        family = None if template else family_format(metadata.get("general.architecture"))
        if family is not None:
            log.info("model %s has no chat template; using its family's turn format", self.name)
            template = family.template
            for marker in family.ends:
                ids = self.model.tokenize(marker.encode(), add_bos=False, special=True)
                if len(ids) == 1:
                    self._ends_generation[ids[0]] = True
        self.tool_format = template_format(template)
        if template:
            # The GGUF's own template, rendered in jinja2's immutable sandbox (as
            # llama-cpp-python does since CVE-2024-34359).
            eos_id, bos_id = self.model.token_eos(), self.model.token_bos()
            self._chat_formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self.model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=self.model.token_get_text(bos_id) if bos_id != -1 else "",
            )

    @property
    def n_ctx(self) -> int:
        """Context per sequence: what one request's prompt and answer must fit in."""
        return self.settings.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab()

    @property
    def has_chat_template(self) -> bool:
        return self._chat_formatter is not None

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        if self._chat_formatter is None:
            raise InvalidRequest(
                f"Model {self.name!r} has no chat template in its GGUF metadata; use /v1/completions "
                "with a prompt you format yourself, or pick a chat model.", param="model")
        try:
            return self._chat_formatter(messages=messages, tools=tools).prompt
        except Exception as exc:  # jinja2 errors and the template's own raise_exception()
            raise InvalidRequest(f"The model's chat template rejected these messages: {exc}",
                                 param="messages") from None

    def tokenize(self, text: str) -> list[int]:
        # special=True so the template's control tokens (<|im_start|> ...) become single tokens.
        tokens = self.model.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        bos = self.model.token_bos()
        if len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            del tokens[0]  # the template wrote its own BOS
        return tokens

    def completion_prompt(self, text: str) -> list[int]:
        """The tokens of a raw completion prompt. An empty prompt is the start of text alone (as
        OpenAI's API treats it); a model without a start-of-text token cannot begin from nothing."""
        tokens = self.tokenize(text)
        if tokens:
            return tokens
        bos = self.model.token_bos()
        if bos < 0:
            raise InvalidRequest(f"The prompt is empty and model {self.name!r} has no start-of-text token to "
                                 "begin from; send some text.", param="prompt")
        return [bos]

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        import llama_cpp

        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buffer, len(buffer), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buffer, len(buffer), 0, False)
        piece = buffer.raw[:n]
        with self._pieces_lock:
            self._pieces[token] = piece
        return piece

    def ends_generation(self, token: int) -> bool:
        ends = self._ends_generation.get(token)
        if ends is None:  # asked once per token id: a ctypes call gives up the GIL on every token
            import llama_cpp

            ends = self._ends_generation[token] = bool(llama_cpp.llama_vocab_is_eog(self.model.vocab, token))
        return ends

    def check_sampling(self, sampling: Sampling) -> None:
        n_vocab = self.n_vocab
        for token, _bias in sampling.logit_bias:
            if token >= n_vocab:
                raise InvalidRequest(f"logit_bias names token {token}, but model {self.name!r} has {n_vocab} "
                                     f"tokens (ids 0 to {n_vocab - 1}).", param="logit_bias")
        if sampling.grammar is not None:
            self.grammars.check(sampling.grammar)

    @property
    def end_token(self) -> int:
        """The token an answer ends with when a grammar allows nothing more."""
        return self.model.token_eos()

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

    def close(self) -> None:
        self.embedder.close()
        self._chat_formatter = None
        with self._pieces_lock:
            self._pieces, self._ends_generation = {}, {}  # the file may change before the next load
        if self.grammars is not None:
            self.grammars.close()
            self.grammars = None
        if self.context is not None:
            self.context.close()
            self.context = None
        if self.model is not None:
            self.model.close()
            self.model = None
