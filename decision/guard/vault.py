"""Swap sensitive values for placeholders on the way out, and back on the way in.

One vault per request. The same value gets the same placeholder everywhere in
the conversation (``[PERSON_1]`` for "Alice" in every turn), numbered by first
appearance, so a conversation re-sent turn after turn redacts the same way. A
placeholder that already occurs literally in the text is skipped, so restoring
can never replace something the user wrote. The mapping lives only in memory,
for this one request: placeholders from another request never resolve here.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

from localllm.decision.guard.scan import Finding
from localllm.vocabulary import AnswerEvent, TextDelta, ToolCall

_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*_\d+)\]")
# What the tail of a stream chunk looks like when a placeholder may be cut in two.
_PARTIAL = re.compile(r"\[[A-Z0-9_]*$")


class RedactionVault:
    def __init__(self):
        self._value_of: dict[str, str] = {}      # "[PERSON_1]" -> "Alice"
        self._placeholder_of: dict[tuple[str, str], str] = {}  # (type, value) -> placeholder
        self._next = defaultdict(int)
        self._taken: str = ""

    @property
    def placeholders(self) -> int:
        return len(self._value_of)

    def redact(self, messages: Sequence[dict], findings: Sequence[Finding]) -> list[dict]:
        """Copies of ``messages`` with every finding's value replaced by its placeholder."""
        self._taken = "\n".join(m.get("content") or "" for m in messages)
        by_message = defaultdict(list)
        for finding in sorted(findings, key=lambda f: (f.message_index, f.start)):
            by_message[finding.message_index].append(finding)
        redacted = []
        for index, message in enumerate(messages):
            content = message.get("content") or ""
            pieces, cursor = [], 0
            for finding in by_message.get(index, ()):
                if finding.start < cursor:
                    continue  # overlapping findings: the first one already covers it
                pieces.append(content[cursor:finding.start])
                pieces.append(self.placeholder_for(finding.entity_type, content[finding.start:finding.end]))
                cursor = finding.end
            pieces.append(content[cursor:])
            redacted.append({**message, "content": "".join(pieces)} if by_message.get(index) else dict(message))
        return redacted

    def placeholder_for(self, entity_type: str, value: str) -> str:
        """The placeholder for this value (a new one the first time it is seen)."""
        key = (entity_type, value)
        if key not in self._placeholder_of:
            while True:
                self._next[entity_type] += 1
                placeholder = f"[{entity_type}_{self._next[entity_type]}]"
                if placeholder not in self._taken:
                    break
            self._placeholder_of[key] = placeholder
            self._value_of[placeholder] = value
        return self._placeholder_of[key]

    def restore(self, text: str) -> str:
        if not self._value_of:
            return text
        return _PLACEHOLDER.sub(lambda m: self._value_of.get(m.group(0), m.group(0)), text)

    def restore_json(self, text: str) -> str:
        """Restore inside a JSON document (a tool call's arguments): values go back into its strings,
        escaped as JSON strings must be."""
        if not self._value_of or not _PLACEHOLDER.search(text):
            return text
        try:
            document = json.loads(text)
        except ValueError:
            return self.restore(text)

        def restored(node):
            if isinstance(node, str):
                return self.restore(node)
            if isinstance(node, list):
                return [restored(item) for item in node]
            if isinstance(node, dict):
                return {self.restore(key): restored(value) for key, value in node.items()}
            return node

        return json.dumps(restored(document), ensure_ascii=False)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in a stream of text pieces, even one split across pieces
    (``"[PER"`` + ``"SON_1]"``): a tail that could still become a placeholder is held
    back until the next piece shows what it is."""

    def __init__(self, vault: RedactionVault):
        self.vault = vault
        self._held = ""
        self._longest = max((len(p) for p in vault._value_of), default=0)

    def feed(self, piece: str) -> str:
        text = self._held + piece
        partial = _PARTIAL.search(text)
        if partial is not None and len(text) - partial.start() < self._longest:
            self._held, text = text[partial.start():], text[:partial.start()]
        else:
            self._held = ""
        return self.vault.restore(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self.vault.restore(text)


async def restore_placeholders(source: AsyncIterator[AnswerEvent], vault: RedactionVault
                               ) -> AsyncIterator[AnswerEvent]:
    """Put redacted values back into an upstream's answer, placeholders split across chunks included."""
    if not vault.placeholders:
        async for event in source:
            yield event
        return
    restorer = vault.stream_restorer()
    try:
        async for event in source:
            if isinstance(event, TextDelta):
                text = restorer.feed(event.text)
                if text:
                    yield TextDelta(text, event.logprobs)
            else:
                tail = restorer.flush()
                if tail:
                    yield TextDelta(tail)
                if isinstance(event, ToolCall):
                    event = ToolCall(event.id, event.name, vault.restore_json(event.arguments))
                yield event
    finally:
        await source.aclose()
