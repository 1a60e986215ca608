"""Ollama's answer shapes: chat and generate responses (whole, or as NDJSON lines), with durations in
nanoseconds and token counts as Ollama reports them, and model descriptions for tags, show and ps."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from localllm.daemon.engine.tool_calls import CallHold, parse_calls
from localllm.daemon.models.gguf_info import GGUFInfo
from localllm.daemon.pipeline.generation import Generation
from localllm.vocabulary import AnswerText, Finished, ToolCall


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Timing:
    """When a request started, and when its first and last tokens came: Ollama's durations."""

    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    def saw_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def elapsed_ns(self) -> int:
        return _ns(time.perf_counter() - self.started)

    def report(self, finished: Finished) -> dict:
        end = time.perf_counter()
        first = self.first_token or end
        return {"total_duration": _ns(end - self.started), "load_duration": 0,
                "prompt_eval_count": finished.prompt_tokens, "prompt_eval_duration": _ns(first - self.started),
                "eval_count": finished.completion_tokens, "eval_duration": _ns(end - first)}


def _ns(seconds: float) -> int:
    return max(int(seconds * 1e9), 0)


def ollama_name(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


def _tool_calls(calls: list[ToolCall]) -> list[dict]:
    return [{"function": {"name": call.name, "arguments": json.loads(call.arguments)}} for call in calls]


def chat_message(gen: Generation, answer: AnswerText) -> dict:
    """The assistant message: its tool calls (with anything an upstream said before them), or its text."""
    text = answer.text
    calls = answer.calls or (parse_calls(text, gen.tool_plan) if gen.tool_plan is not None else None)
    if calls:
        return {"role": "assistant", "content": text if answer.calls else "", "tool_calls": _tool_calls(calls)}
    return {"role": "assistant", "content": text}


def chat_done(gen: Generation, answer: AnswerText, timing: Timing) -> dict:
    return {"model": ollama_name(gen.model), "created_at": now_iso(), "message": chat_message(gen, answer),
            "done": True, "done_reason": answer.finished.finish_reason, **timing.report(answer.finished)}


def generate_done(gen: Generation, answer: AnswerText, timing: Timing) -> dict:
    return {"model": ollama_name(gen.model), "created_at": now_iso(), "response": answer.text, "done": True,
            "done_reason": answer.finished.finish_reason, **timing.report(answer.finished)}


class OllamaLines:
    """An answer's events as Ollama's NDJSON lines. Chat text that may be a tool call is held back until
    it can be told apart from a plain answer (``CallHold``); a call comes whole in one line, as Ollama
    sends it."""

    def __init__(self, gen: Generation, timing: Timing, *, chat: bool):
        self.gen, self.timing, self.chat = gen, timing, chat
        self._hold = CallHold(gen.tool_plan if chat else None)

    def _line(self, text: str = "") -> dict:
        body = {"message": {"role": "assistant", "content": text}} if self.chat else {"response": text}
        return {"model": ollama_name(self.gen.model), "created_at": now_iso(), **body, "done": False}

    def text(self, text: str) -> list[dict]:
        self.timing.saw_token()
        text, _ = self._hold.feed(text)
        return [self._line(text)] if text else []

    def tool_call(self, call: ToolCall) -> list[dict]:
        """An upstream's call: whole, in a line of its own, as Ollama sends one."""
        return [self._calls_line([call])]

    def finished(self, finished: Finished) -> list[dict]:
        calls, text, _ = self._hold.finish()
        lines = [self._line(text)] if text else []
        if calls:
            lines.append(self._calls_line(calls))
        last = self._line()
        last.update(done=True, done_reason=finished.finish_reason, **self.timing.report(finished))
        lines.append(last)
        return lines

    def _calls_line(self, calls: list[ToolCall]) -> dict:
        return {**self._line(), "message": {"role": "assistant", "content": "", "tool_calls": _tool_calls(calls)}}
def model_details(info: GGUFInfo | None) -> dict:
    architecture = info.architecture if info is not None else None
    return {"parent_model": "", "format": "gguf", "family": architecture or "",
            "families": [architecture] if architecture else None,
            "parameter_size": _parameter_size(info.parameter_count) if info is not None else "",
            "quantization_level": (info.quantization or "") if info is not None else ""}


def _parameter_size(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)


def model_info(info: GGUFInfo) -> dict:
    found = {"general.architecture": info.architecture, "general.parameter_count": info.parameter_count,
             "general.file_type": info.quantization}
    if info.architecture and info.context_length:
        found[f"{info.architecture}.context_length"] = info.context_length
    return {key: value for key, value in found.items() if value is not None}


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
