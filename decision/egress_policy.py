"""What may reach an upstream: allow, redact or block, per trust level and class of data.

The verdict is the strictest action over all findings: one ``block`` keeps the
whole request on the device; otherwise every ``redact`` finding is replaced by
a placeholder before sending. A client can make a request stricter (stay
local) but nothing in a request can loosen this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from localllm.config.decision import PolicySettings, TrustPolicy
from localllm.decision.guard.scan import Finding

_SEVERITY = {"allow": 0, "redact": 1, "block": 2}


@dataclass(frozen=True)
class EgressVerdict:
    action: Literal["allow", "redact", "block"]
    to_redact: tuple[Finding, ...] = ()
    blocked_classes: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        if self.action == "block":
            return "policy_block:" + ",".join(self.blocked_classes)
        return None


class EgressPolicy:
    def __init__(self, settings: PolicySettings):
        self.settings = settings

    def table(self, trust: str) -> TrustPolicy:
        return self.settings.onprem if trust == "onprem" else self.settings.cloud  # unknown trust: strictest

    def sensitive(self, findings: Sequence[Finding]) -> list[Finding]:
        """What counts as sensitive on the device too: values that may not reach a cloud
        upstream in the clear. Prompts holding any are not cached, and are redacted in the log."""
        table = self.settings.cloud
        return [f for f in findings if getattr(table, f.entity_class) != "allow"]

    def verdict(self, findings: Sequence[Finding], trust: str) -> EgressVerdict:
        table = self.table(trust)
        actions = {f: getattr(table, f.entity_class) for f in findings}
        worst = max(actions.values(), key=_SEVERITY.__getitem__, default="allow")
        if worst == "block":
            blocked = sorted({f.entity_class for f, action in actions.items() if action == "block"})
            return EgressVerdict("block", blocked_classes=tuple(blocked))
        return EgressVerdict(worst, to_redact=tuple(f for f, action in actions.items() if action == "redact"))
