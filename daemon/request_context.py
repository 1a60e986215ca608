"""Per-request facts that come from HTTP headers rather than the body."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from time import perf_counter

from localllm.errors import AuthenticationFailed, InvalidRequest

NAMESPACE_HEADER = "X-LocalLLM-Namespace"
ESCALATION_HEADER = "X-LocalLLM-Escalation"
_ESCALATIONS = ("never", "auto", "prefer")
DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass
class RequestContext:
    namespace: str = DEFAULT_NAMESPACE
    skip_cache_lookup: bool = False  # Cache-Control: no-cache
    skip_cache_store: bool = False   # Cache-Control: no-store
    escalation: str | None = None    # X-LocalLLM-Escalation: never | auto | prefer
    started_at: float = field(default_factory=perf_counter)


def context_from_headers(headers, token_namespace: str | None = None) -> RequestContext:
    """``token_namespace``: the namespace the caller's token is bound to, if any; it cannot be changed by header."""
    asked = headers.get(NAMESPACE_HEADER, "").strip()
    if token_namespace is not None and asked and asked != token_namespace:
        raise AuthenticationFailed(f"This API token is bound to namespace {token_namespace!r}; leave out "
                                   f"{NAMESPACE_HEADER} or use another token.")
    namespace = token_namespace or asked or DEFAULT_NAMESPACE
    if not _NAMESPACE.match(namespace):
        raise InvalidRequest(
            f"{NAMESPACE_HEADER} must be 1-64 characters of letters, digits, '.', '_', ':' or '-'.",
            param=NAMESPACE_HEADER)
    escalation = headers.get(ESCALATION_HEADER, "").strip().lower() or None
    if escalation is not None and escalation not in _ESCALATIONS:
        raise InvalidRequest(f"{ESCALATION_HEADER} must be one of never, auto, prefer.", param=ESCALATION_HEADER)
    directives = {part.strip().split("=", 1)[0].lower() for part in headers.get("Cache-Control", "").split(",")}
    return RequestContext(namespace=namespace, skip_cache_lookup="no-cache" in directives,
                          skip_cache_store="no-store" in directives, escalation=escalation)
