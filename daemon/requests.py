"""Parse and validate OpenAI-shaped request bodies into the typed requests the pipeline takes.

Fields that OpenAI clients commonly send and that do not change the answer
(``user``, ``logprobs: false`` ...) are accepted and ignored; features localllm
does not implement yet are refused with a 400 that names the field, rather
than silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localllm.decision.decide import RequestFacts
from localllm.errors import InvalidRequest
from localllm.vocabulary import Sampling

_TOKEN_ID = re.compile(r"[0-9]{1,12}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict:
        # Chat templates know system/user/assistant; "developer" is OpenAI's newer name for system.
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class LocalLLMOptions(BaseModel):
    """The ``localllm`` body field: what a client may ask of routing. It can only make a
    request stricter; the sensitive-data policy is the config's alone."""

    escalation: Literal["never", "auto", "prefer"] | None = None
    cascade: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_known(cls, value):
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"escalation", "cascade"})
            if unknown:
                raise _Unsupported("localllm", f"localllm.{unknown[0]} cannot be set by a request: only "
                                   "`escalation` (never|auto|prefer) and `cascade` (true|false) can. The "
                                   "sensitive-data policy is set in the config ([policy]), never per request.")
        return value


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=10)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, json_schema_extra={"propertyNames": {"pattern": "^[0-9]{1,12}$"}})
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI's: a 64-bit integer
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, json_schema_extra={"maximum": 1})  # refused above 1 with its own message

    @field_validator("stop")
    @classmethod
    def _stop(cls, value):
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences")
            if any(not item for item in value):
                raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value):
        for token, bias in (value or {}).items():
            if not _TOKEN_ID.fullmatch(token):
                raise ValueError(f"keys must be token ids (non-negative integers as strings), got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be between -100 and 100, got {bias} for token {token}")
        return value

    @field_validator("n")
    @classmethod
    def _single_choice(cls, value: int) -> int:
        if value != 1:
            raise _Unsupported("n", f"Only n=1 is supported (got n={value}): send one request per answer.")
        return value

    def sampling(self) -> Sampling:
        defaults = Sampling()
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            min_p=defaults.min_p if self.min_p is None else self.min_p,
            repeat_penalty=defaults.repeat_penalty if self.repeat_penalty is None else self.repeat_penalty,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            seed=self.seed,
            stop=tuple(stop),
            logit_bias=tuple((int(token), float(bias)) for token, bias in (self.logit_bias or {}).items()),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def deterministic(self) -> bool:
        """The same request gets the same answer (greedy, or seeded): its answer may be cached."""
        return self.temperature == 0 or self.seed is not None

    def sampling_scope(self) -> dict:
        """The sampling settings, as part of a cached answer's scope."""
        sampling = self.sampling()
        return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
                "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty, "seed": sampling.seed,
                "stop": list(sampling.stop), "max_tokens": self.max_tokens}


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict | None = None
    logprobs: bool | None = None
    localllm: LocalLLMOptions | None = None

    @model_validator(mode="after")
    def _unsupported(self):
        if self.tools or self.functions:
            raise _Unsupported("tools", "Tool calling is not supported by localllm yet; leave out `tools`.")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise _Unsupported("response_format", "Only response_format {\"type\": \"text\"} is supported yet.")
        if self.logprobs:
            raise _Unsupported("logprobs", "logprobs are not supported yet; leave out `logprobs`.")
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def template_messages(self) -> list[dict]:
        return [message.for_template() for message in self.messages]

    def facts(self) -> RequestFacts:
        """What deciding where it goes needs to know."""
        return RequestFacts(
            model=self.model, messages=self.template_messages(), deterministic=self.deterministic,
            stream=self.stream, max_tokens=self.max_tokens,
            escalation=self.localllm.escalation if self.localllm else None,
            cascade_opt_in=bool(self.localllm and self.localllm.cascade),
            cache_scope={"tools": self.tools, "response_format": self.response_format,
                         "sampling": self.sampling_scope()})


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None

    @model_validator(mode="after")
    def _unsupported(self):
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise _Unsupported("prompt", "Send one prompt per request (a string, or a list of one).")
            self.prompt = self.prompt[0]
        if self.echo:
            raise _Unsupported("echo", "echo is not supported; leave it out.")
        if self.suffix:
            raise _Unsupported("suffix", "suffix (fill-in-the-middle) is not supported yet.")
        if self.logprobs:
            raise _Unsupported("logprobs", "logprobs are not supported yet; leave out `logprobs`.")
        if self.max_tokens is None:
            self.max_tokens = 16  # OpenAI's documented default for /v1/completions
        return self


class _Unsupported(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


def parse_request(model_type: type[_Body], body: Any) -> Any:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        # Strict: a number must be a JSON number and a flag a JSON boolean ("10" and true are not max_tokens).
        return model_type.model_validate(body, strict=True)
    except ValidationError as exc:
        raise _to_invalid_request(exc) from None


def _to_invalid_request(exc: ValidationError) -> InvalidRequest:
    error = exc.errors()[0]
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, _Unsupported):
        return InvalidRequest(original.message, param=original.param, code="unsupported_parameter")
    location = [part for part in error["loc"]]
    # Drop pydantic's union-branch labels ("str", "list[TextPart]") from the path.
    param = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in location
                     if not (isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))))
    param = param.replace(".[", "[")
    if error["type"] == "missing":
        return InvalidRequest(f"Missing required field '{param}'.", param=param or None)
    message = error["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"Invalid '{param}': {message}.", param=param or None)
