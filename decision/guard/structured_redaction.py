"""Redacting a conversation in OpenAI's structured shape: content, tool calls' arguments, tool results.

The guard scans the conversation as the chat template sees it (``rendered``: one
role/content message per structured message, earlier tool calls written out as
JSON, a tool result prefixed with the function it answers). An upstream that
takes tools needs the structured messages instead, so each finding is carried
over to where its value sits there: a span of the message's own content, or a
string (or number) inside a call's arguments. Whatever the mapping misses, the
final check catches: if any value to redact is still in what would be sent,
nothing is sent (``RedactionIncomplete``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

from localllm.decision.guard.scan import Finding
from localllm.decision.guard.vault import RedactionVault


class RedactionIncomplete(Exception):
    """A value to redact would still have left the device: the request must not be sent."""


def redact_structured(vault: RedactionVault, messages: Sequence[dict], rendered: Sequence[dict],
                      findings: Sequence[Finding]) -> list[dict]:
    """Copies of ``messages`` (OpenAI-shaped; ``rendered[i]`` is how ``messages[i]`` was scanned) with every
    finding's value swapped for the vault's placeholder; the same placeholders as ``vault.redact(rendered)``."""
    if len(messages) != len(rendered):
        raise RedactionIncomplete("the scanned conversation does not match the one to send")
    if any(finding.message_index >= len(messages) for finding in findings):
        # Found in the tool definitions or the response schema: those go as they are, or not at all.
        raise RedactionIncomplete("a sensitive value in the tool definitions or the response schema")
    vault.redact(rendered, findings)  # numbers the placeholders in the order the guard saw the values
    by_message: dict[int, list[Finding]] = defaultdict(list)
    for finding in sorted(findings, key=lambda f: (f.message_index, f.start)):
        by_message[finding.message_index].append(finding)
    redacted = [_redacted_message(vault, message, rendered[index]["content"] or "", by_message.get(index, []))
                for index, message in enumerate(messages)]
    _check_nothing_left(redacted, rendered, findings)
    return redacted


def _redacted_message(vault: RedactionVault, message: dict, scanned: str, findings: list[Finding]) -> dict:
    if not findings:
        return message
    content = message.get("content") or ""
    # Where the message's own text sits in what was scanned: all of it, its start (an assistant's words
    # before its calls) or its end (a tool result after "Result of <function>: ").
    offset = 0 if scanned.startswith(content) else len(scanned) - len(content) if scanned.endswith(content) else None
    pieces, cursor, elsewhere = [], 0, []
    for finding in findings:
        value = scanned[finding.start:finding.end]
        placeholder = vault.placeholder_for(finding.entity_type, value)
        if content and offset is not None and offset <= finding.start and finding.end <= offset + len(content):
            start, end = finding.start - offset, finding.end - offset
            if start >= cursor:  # overlapping findings: the first one covers it
                pieces.extend((content[cursor:start], placeholder))
                cursor = end
        else:
            elsewhere.append((value, placeholder))
    copy = dict(message)
    if pieces:
        copy["content"] = "".join(pieces) + content[cursor:]
    if elsewhere and message.get("tool_calls"):
        copy["tool_calls"] = [_redacted_call(call, elsewhere) for call in message["tool_calls"]]
    return copy


def _redacted_call(call: dict, values: list[tuple[str, str]]) -> dict:
    function = call["function"]
    arguments = json.loads(function["arguments"])  # checked to parse when the request was read
    redacted = json.dumps(_swap(arguments, values), ensure_ascii=False)
    return {**call, "function": {**function, "arguments": redacted}}


def _swap(node, values: list[tuple[str, str]]):
    """``node`` (parsed JSON) with each value swapped for its placeholder, in strings, keys and numbers."""
    if isinstance(node, str):
        for value, placeholder in values:
            for form in _forms(value):
                node = node.replace(form, placeholder)
        return node
    if isinstance(node, list):
        return [_swap(item, values) for item in node]
    if isinstance(node, dict):
        return {_swap(key, values): _swap(item, values) for key, item in node.items()}
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        text = json.dumps(node)
        if any(form in text for value, _ in values for form in _forms(value)):
            return _swap(text, values)  # a number that holds a sensitive value becomes its placeholder
    return node


def _forms(value: str) -> tuple[str, ...]:
    """The value as scanned, and as it reads once its JSON escapes are undone (a value found in the
    JSON text of a call holds them)."""
    try:
        unescaped = json.loads(f'"{value}"')
    except ValueError:
        return (value,)
    return (value,) if unescaped == value else (value, unescaped)


def _check_nothing_left(redacted: list[dict], rendered: Sequence[dict], findings: Sequence[Finding]) -> None:
    """Each value is gone from the message it was found in (in any form: escapes undone too)."""
    for finding in findings:
        value = rendered[finding.message_index]["content"][finding.start:finding.end]
        message = redacted[finding.message_index]
        sent = json.dumps(message, ensure_ascii=False)
        if any(form in sent or form in text for form in _forms(value) for text in _strings(message)):
            raise RedactionIncomplete(f"a {finding.entity_type} value could not be redacted everywhere in "
                                      f"messages[{finding.message_index}]")


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    if isinstance(node, dict):
        return [text for key, item in node.items() for text in (key, *_strings(item))]
    return []
