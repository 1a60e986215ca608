"""Parse and validate OpenAI-shaped request bodies into the typed requests the pipeline takes.

Fields that OpenAI clients commonly send and that do not change the answer
(``user``, ``logprobs: false`` ...) are accepted and ignored; features localllm
does not implement yet are refused with a 400 that names the field, rather
than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localllm.daemon.engine.grammar import JSON_OBJECT_SCHEMA, schema_grammar
from localllm.daemon.engine.tool_calls import Format, FunctionSpec, ToolPlan, call_text, check_parameters
from localllm.decision.decide import RequestFacts
from localllm.errors import InvalidRequest
from localllm.fallback.providers import Capability
from localllm.vocabulary import Sampling

_TOKEN_ID = re.compile(r"[0-9]{1,12}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class CalledFunction(_Body):
    name: str = Field(min_length=1)
    arguments: str  # JSON text, as OpenAI sends it


class AssistantToolCall(_Body):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction

    def parsed_arguments(self, where: str) -> dict:
        try:
            arguments = json.loads(self.function.arguments)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{where}.function.arguments must be a JSON object in a string.", param=where)
        return arguments


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[AssistantToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None                   # a tool message: the call it answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


def template_messages(messages: list[ChatMessage], format: Format = "json") -> list[dict]:
    """The conversation as chat templates take it. "developer" is OpenAI's newer name for system.
    Earlier tool calls are written the way the model writes them; with the JSON wrapper a tool's result
    is a user turn that names the function (templates without tool support know no "tool" role)."""
    called: dict[str, str] = {}
    rendered = []
    for index, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        content = message.text()
        if message.tool_calls:
            where = f"messages[{index}].tool_calls"
            calls = [(call.function.name, call.parsed_arguments(f"{where}[{i}]"))
                     for i, call in enumerate(message.tool_calls)]
            called.update({call.id: call.function.name for call in message.tool_calls})
            text = call_text(calls, format)
            content = f"{content}\n{text}" if content else text
        if role == "tool":
            if not message.tool_call_id or message.tool_call_id not in called:
                raise InvalidRequest(f"messages[{index}] is a tool result for a call no earlier assistant message "
                                     "made (tool_call_id must name one of its tool_calls).",
                                     param=f"messages[{index}].tool_call_id")
            if format == "json":
                role, content = "user", f"Result of {called[message.tool_call_id]}: {content}"
        rendered.append({"role": role, "content": content})
    return rendered


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


class JsonSchemaFormat(_Body):
    name: str = Field("response", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict | bool = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None  # the answer always follows the schema (a grammar constrains it), strict or not


class ResponseFormat(_Body):
    """OpenAI's response_format: free text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_for_json_schema(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise _Unsupported("response_format.json_schema", "response_format of type json_schema needs "
                               "json_schema: {\"name\": ..., \"schema\": {...}}.")
        return self

    def answer_schema(self) -> dict | bool | None:
        """The JSON Schema the answer must follow, or None for free text."""
        if self.type == "json_object":
            return JSON_OBJECT_SCHEMA
        if self.type == "json_schema":
            return self.json_schema.schema_
        return None


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
        """The sampling settings, as part of a cached answer's scope (the output format is its own part)."""
        sampling = _Generation.sampling(self)
        return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
                "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty, "seed": sampling.seed,
                "stop": list(sampling.stop), "max_tokens": self.max_tokens}


class FunctionDefinition(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None  # calls always follow the parameters schema (a grammar constrains them)


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: list[Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    localllm: LocalLLMOptions | None = None

    @model_validator(mode="after")
    def _unsupported(self):
        if self.functions:
            raise _Unsupported("functions", "The deprecated `functions` field is not supported; send `tools`.")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise _Unsupported("tools", "Two tools have the same function name.")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.get("name") not in names:
            raise _Unsupported("tool_choice", f"tool_choice names {self.tool_choice.function.get('name')!r}, which "
                               "is not among the tools.")
        if self.tool_choice not in (None, "none") and not names:
            raise _Unsupported("tool_choice", "tool_choice needs tools to choose from.")
        if names and self.tool_choice != "none" and self.output_schema() is not None:
            raise _Unsupported("response_format", "tools and a JSON response_format cannot be combined yet: "
                               "send one or the other.")
        if self.top_logprobs is not None and not self.logprobs:
            raise _Unsupported("top_logprobs", "top_logprobs needs logprobs: true.")
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    @property
    def logprobs_wanted(self) -> int | None:
        """How many alternatives to report per token (0: only the token's own), or None for no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_messages(self, format: Format = "json") -> list[dict]:
        return template_messages(self.messages, format)

    def tool_plan(self, format: Format = "json") -> ToolPlan | None:
        """How tools may be called (None without tools). Checks each function's parameters schema."""
        if not self.tools:
            return None
        choice = self.tool_choice
        plan = ToolPlan(
            functions=tuple(FunctionSpec(t.function.name, t.function.description, t.function.parameters)
                            for t in self.tools),
            mode="none" if choice == "none" else "required" if choice == "required" else "auto",
            only=choice.function.get("name") if isinstance(choice, NamedToolChoice) else None,
            parallel=self.parallel_tool_calls, format=format)
        check_parameters(plan)
        return plan

    def _tools_scope(self) -> dict | None:
        if not self.tools:
            return None
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        return {"tools": [tool.model_dump(exclude_none=True) for tool in self.tools], "tool_choice": choice,
                "parallel": self.parallel_tool_calls}

    def output_schema(self) -> dict | bool | None:
        return self.response_format.answer_schema() if self.response_format is not None else None

    def sampling(self) -> Sampling:
        sampling = super().sampling()
        schema = self.output_schema()
        if schema is None:
            return sampling
        return dataclasses.replace(sampling, grammar=schema_grammar(schema, "response_format"))

    def _response_format_scope(self) -> dict | None:
        if self.response_format is None or self.response_format.type == "text":
            return None  # free text either way: the same answers
        return self.response_format.model_dump(by_alias=True, exclude_none=True)

    def needs(self) -> frozenset[Capability]:
        """What an upstream must carry to answer this request."""
        needs: set[Capability] = set()
        if self.tools:
            needs.add("tools")
        if self.output_schema() is not None:
            needs.add("json_output")
        if self.logprobs:
            needs.add("logprobs")
        return frozenset(needs)

    def upstream_messages(self) -> list[dict]:
        """The conversation in OpenAI's shape, for an upstream ("developer" as "system", which every
        OpenAI-compatible server and Anthropic know)."""
        messages = []
        for message in self.messages:
            sent: dict = {"role": "system" if message.role == "developer" else message.role,
                          "content": message.text() if message.content is not None or not message.tool_calls
                          else None}
            if message.tool_calls:
                sent["tool_calls"] = [call.model_dump() for call in message.tool_calls]
            if message.role == "tool":
                sent["tool_call_id"] = message.tool_call_id
            if message.name is not None and message.role in ("user", "assistant", "system", "developer"):
                sent["name"] = message.name
            messages.append(sent)
        return messages

    def upstream_fields(self) -> dict:
        """The UpstreamRequest fields besides sampling: tools, tool choice, JSON output, logprobs."""
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        fields = {"tools": [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None,
                  "tool_choice": choice if self.tools else None,
                  "parallel_tool_calls": None if self.parallel_tool_calls or not self.tools else False,
                  "top_logprobs": self.logprobs_wanted}
        if self.response_format is not None and self.response_format.type != "text":
            fields["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        return fields

    def facts(self) -> RequestFacts:
        """What deciding where it goes needs to know."""
        fields = self.upstream_fields()
        extra = [fields["tools"], fields.get("response_format")]
        return RequestFacts(
            model=self.model, messages=self.template_messages(), deterministic=self.deterministic,
            cacheable=not self.logprobs,  # a cached answer has no log-probabilities to give
            needs=self.needs(), extra_text=json.dumps(extra, ensure_ascii=False) if any(extra) else "",
            stream=self.stream, max_tokens=self.max_tokens,
            escalation=self.localllm.escalation if self.localllm else None,
            cascade_opt_in=bool(self.localllm and self.localllm.cascade),
            cache_scope={"tools": self._tools_scope(), "response_format": self._response_format_scope(),
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
