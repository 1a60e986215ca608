"""Per-request facts that come from HTTP headers rather than the body."""

from __future__ import annotations

import re

from localllm.config.engine import duration_seconds
from localllm.errors import AuthenticationFailed, InvalidRequest
from localllm.vocabulary import DEFAULT_NAMESPACE, ESCALATION_ORDER, RequestContext

NAMESPACE_HEADER = "X-LocalLLM-Namespace"
ESCALATION_HEADER = "X-LocalLLM-Escalation"
KEEP_ALIVE_HEADER = "X-LocalLLM-Keep-Alive"
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


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
    if escalation is not None and escalation not in ESCALATION_ORDER:
        raise InvalidRequest(f"{ESCALATION_HEADER} must be one of never, auto, prefer.", param=ESCALATION_HEADER)
    directives = {part.strip().split("=", 1)[0].lower() for part in headers.get("Cache-Control", "").split(",")}
    keep_alive = headers.get(KEEP_ALIVE_HEADER, "").strip()
    try:
        keep_alive_s = duration_seconds(keep_alive, KEEP_ALIVE_HEADER) if keep_alive else None
    except ValueError as exc:
        raise InvalidRequest(f"{exc}.", param=KEEP_ALIVE_HEADER) from None
    return RequestContext(namespace=namespace, skip_cache_lookup="no-cache" in directives,
                          skip_cache_store="no-store" in directives, escalation=escalation,
                          keep_alive_s=keep_alive_s)
