"""Tool calling on the local model: how the tools are shown to it, the grammar its answer must follow,
and turning that answer back into OpenAI's ``tool_calls``.

Two formats. A GGUF whose chat template knows Hermes-style calls (``<tool_call>{...}</tool_call>``, as
Qwen, Hermes and SmolLM3 templates do) gets the tools through its own template and answers in that form.
Any other model gets the documented JSON wrapper: the tools are described in the system message and a
call is the whole answer ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``. Either way the
answer is generated under a grammar built from each function's parameters schema, so a call always
names a real function and its arguments always parse and follow the schema. With ``tool_choice: auto``
the grammar lets the model answer in plain text instead, as long as the text does not begin the way a
call does.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Literal

from localllm.daemon.engine.grammar import SchemaNotSupported, schema_grammar
from localllm.vocabulary import ToolCall, new_call_id

Format = Literal["json", "hermes"]
Mode = Literal["auto", "required", "none"]

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
# Calls in one answer, at most: small models that may call in parallel tend to repeat a call until
# max_tokens cuts the answer (and its JSON) short.
MAX_PARALLEL_CALLS = 5
_HERMES_CALL = re.compile(re.escape(HERMES_OPEN) + r"\s*(\{.*?\})\s*" + re.escape(HERMES_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str | None
    parameters: dict


@dataclass(frozen=True)
class ToolPlan:
    functions: tuple[FunctionSpec, ...]
    mode: Mode = "auto"
    only: str | None = None  # tool_choice naming one function
    parallel: bool = True
    format: Format = "json"

    @property
    def callable(self) -> tuple[FunctionSpec, ...]:
        return tuple(f for f in self.functions if self.only is None or f.name == self.only)

    @property
    def must_call(self) -> bool:
        return self.mode == "required" or self.only is not None


def template_format(template: str | None) -> Format:
    """Hermes-style when the model's own template renders tool calls that way, else the JSON wrapper."""
    return "hermes" if template and HERMES_OPEN in template and "tools" in template else "json"


# -- the grammar ------------------------------------------------------------------------------------


def plan_grammar(plan: ToolPlan) -> str:
    """The GBNF the answer must follow, or None when no call may be made. (Rule names of our own carry a
    ``localllm-`` prefix, which the converter never makes, so they cannot clash with a schema's.)"""
    if plan.mode == "none" or not plan.callable:
        return None
    call = _call_schema(plan.callable)
    if plan.format == "json":
        calls = {"type": "object", "additionalProperties": False, "required": ["tool_calls"],
                 "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                               "maxItems": MAX_PARALLEL_CALLS if plan.parallel else 1}}}
        grammar = _renamed_root(schema_grammar(calls, "tools"), "localllm-calls")
        free = "localllm-free ::= [^{] [^\\x00]*\n"
    else:
        one = _renamed_root(schema_grammar(call, "tools"), "localllm-call")
        block = f'"{HERMES_OPEN}\\n" localllm-call "\\n{HERMES_CLOSE}"'
        grammar = one + f"localllm-calls ::= {block}" + (f' ("\\n" {block}){{0,{MAX_PARALLEL_CALLS - 1}}}'
                                                         if plan.parallel else "") + "\n"
        free = "localllm-free ::= [^<] [^\\x00]*\n"
    if plan.must_call:
        return grammar + "root ::= localllm-calls\n"
    return grammar + free + "root ::= localllm-calls | localllm-free\n"


def _call_schema(functions: tuple[FunctionSpec, ...]) -> dict:
    defs: dict = {}
    options = []
    for index, function in enumerate(functions):
        parameters = _hoisted(function.parameters, f"f{index}_", defs)
        options.append({"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                        "properties": {"name": {"const": function.name}, "arguments": parameters}})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def _hoisted(schema: dict, prefix: str, defs: dict) -> dict:
    """``schema`` with its own $defs moved into ``defs`` under ``prefix`` and its references renamed, so
    that several functions' parameters can live in one schema."""
    schema = copy.deepcopy(schema)
    own = {**schema.pop("$defs", {}), **schema.pop("definitions", {})}

    def rename(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                for section in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(section):
                        node["$ref"] = "#/$defs/" + prefix + ref[len(section):]
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    rename(schema)
    for name, definition in own.items():
        rename(definition)
        defs[prefix + name] = definition
    return schema


def _renamed_root(grammar: str, name: str) -> str:
    renamed = re.sub(r"^root ::=", f"{name} ::=", grammar, flags=re.MULTILINE)
    return renamed if renamed.endswith("\n") else renamed + "\n"


def check_parameters(plan: ToolPlan) -> None:
    """Each function's parameters must be a schema the grammar can enforce (400 naming the function)."""
    for index, function in enumerate(plan.functions):
        try:
            schema_grammar(function.parameters, f"tools[{index}].function.parameters")
        except SchemaNotSupported as exc:
            raise SchemaNotSupported(f"Function {function.name!r}: {exc.message}", param=exc.param) from None


# -- the prompt -------------------------------------------------------------------------------------


def with_tools_described(messages: list[dict], plan: ToolPlan) -> list[dict]:
    """The JSON wrapper: the tools and the call format, told to the model in the system message."""
    if plan.mode == "none" or not plan.callable:
        return messages
    listed = json.dumps([{"name": f.name, "description": f.description or "", "parameters": f.parameters}
                         for f in plan.callable], ensure_ascii=False)
    rule = ("Answer only with such a call." if plan.must_call
            else "If no function helps, answer normally in plain text instead.")
    text = ("You can call functions. To call one or more, answer with only this JSON and nothing else: "
            '{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}. ' + rule
            + f"\nFunctions: {listed}")
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def template_tools(plan: ToolPlan) -> list[dict] | None:
    """The tools as the model's own template takes them (OpenAI's shape)."""
    if plan.mode == "none" or not plan.callable:
        return None
    return [{"type": "function", "function": {"name": f.name, "description": f.description or "",
                                              "parameters": f.parameters}} for f in plan.callable]


def call_text(calls: list[tuple[str, dict]], format: Format) -> str:
    """Calls the assistant made earlier, written the way this model would write them."""
    if format == "hermes":
        return "\n".join(f"{HERMES_OPEN}\n{json.dumps({'name': n, 'arguments': a}, ensure_ascii=False)}\n"
                         f"{HERMES_CLOSE}" for n, a in calls)
    return json.dumps({"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}, ensure_ascii=False)


# -- the answer -------------------------------------------------------------------------------------


def parse_calls(text: str, plan: ToolPlan) -> list[ToolCall] | None:
    """The calls in a generated answer, or None when it is a plain-text answer."""
    if plan.mode == "none":
        return None
    stripped = text.strip()
    found: list[tuple[str, object]] = []
    if plan.format == "hermes":
        if not stripped.startswith(HERMES_OPEN):
            return None
        for body in _HERMES_CALL.findall(stripped):
            call = _loads(body)
            if isinstance(call, dict):
                found.append((call.get("name"), call.get("arguments")))
    else:
        if not stripped.startswith("{"):
            return None
        wrapper = _loads(stripped)
        calls = wrapper.get("tool_calls") if isinstance(wrapper, dict) else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                found.append((call.get("name"), call.get("arguments")))
    names = {f.name for f in plan.callable}
    calls, seen = [], set()
    for name, arguments in found:
        if name not in names or not isinstance(arguments, dict):
            continue
        text = json.dumps(arguments, ensure_ascii=False)
        if (name, text) not in seen:  # the same call twice in one answer is one call
            seen.add((name, text))
            calls.append(ToolCall(new_call_id(), name, text))
    return calls or None


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def may_start_a_call(text: str, plan: ToolPlan) -> bool | None:
    """Whether streamed text so far can still become a call: True, False, or None (too early to say)."""
    stripped = text.lstrip()
    if not stripped:
        return None
    opener = HERMES_OPEN if plan.format == "hermes" else "{"
    if stripped.startswith(opener):
        return True
    return None if opener.startswith(stripped) else False


class CallHold:
    """A streamed answer under a tool plan: its text is passed on at once unless it may be a call; then it
    is held to the end and turned into calls, or let go as text when it cannot be one after all."""

    def __init__(self, plan: ToolPlan | None):
        self.plan = plan
        self._text, self._logprobs = "", []
        self._deciding = plan is not None and plan.mode != "none"
        self._calling = False

    def feed(self, text: str, logprobs=()) -> tuple[str, list]:
        """The text (and its tokens' logprobs) to pass on now: ("", []) while it is held."""
        if not (self._deciding or self._calling):
            return text, list(logprobs)
        self._text += text
        self._logprobs.extend(logprobs)
        if self._deciding:
            verdict = may_start_a_call(self._text, self.plan)
            if verdict is not None:
                self._deciding, self._calling = False, verdict
                if not verdict:
                    return self._release()
        return "", []

    def finish(self) -> tuple[list[ToolCall] | None, str, list]:
        """At the end of the answer: (its calls, or None; the held text still to pass on, and its logprobs)."""
        text, logprobs = self._release()
        calls = parse_calls(text, self.plan) if text else None
        return (calls, "", []) if calls else (None, text, logprobs)

    def _release(self) -> tuple[str, list]:
        released = self._text, self._logprobs
        self._text, self._logprobs = "", []
        return released
