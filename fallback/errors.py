"""Errors from talking to an upstream, each with a short ``reason`` code.

The pipeline answers locally when an upstream fails and reports why in
``X-LocalLLM-Fallback-Reason``; ``reason`` is that value. ``retryable`` says
whether another attempt may succeed (the reliability layer retries only those,
and only before the first token). Messages never contain a key: the upstream's
own error text is passed through ``scrub`` before it is quoted.
"""

from __future__ import annotations

from localllm.errors import LocalLLMError

MAX_QUOTED_CHARS = 300


class UpstreamError(LocalLLMError):
    status = 502
    error_type = "upstream_error"
    reason = "bad_response"
    retryable = False

    def __init__(self, upstream: str, message: str, *, retryable: bool | None = None,
                 retry_after_s: float | None = None, http_status: int | None = None):
        super().__init__(message, code=f"upstream_{self.reason}")
        self.upstream = upstream
        if retryable is not None:
            self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.http_status = http_status


class UpstreamUnreachable(UpstreamError):
    """No connection, or it dropped: offline box, closed port, DNS failure, reset."""

    reason = "connect"
    retryable = True
    # True when it looks like the network is down (connect timeout, name lookup failed):
    # the breaker then opens at once instead of after several slow failures.
    offline = False


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "timeout"


class UpstreamStalled(UpstreamError):
    """Tokens were flowing, then nothing for longer than first_byte_timeout_s."""

    status = 504
    reason = "stalled"


class UpstreamRateLimited(UpstreamError):
    reason = "http_429"
    retryable = True


class UpstreamServerError(UpstreamError):
    reason = "http_5xx"
    retryable = True


class UpstreamRejected(UpstreamError):
    """A 4xx other than 429: the request or the key is wrong, and retrying will not help."""

    reason = "http_4xx"


class UpstreamBadResponse(UpstreamError):
    """Malformed JSON, a truncated stream, or an error event in the stream."""

    reason = "bad_response"


class UpstreamBusy(UpstreamError):
    """All max_concurrency slots stayed taken for as long as we would wait for a first byte."""

    status = 503
    reason = "busy"


class CircuitOpen(UpstreamError):
    status = 503
    reason = "circuit_open"

    def __init__(self, upstream: str, seconds_until_half_open: float):
        super().__init__(upstream, f"Upstream {upstream!r} failed repeatedly and is paused for another "
                         f"{seconds_until_half_open:.0f} s; `localllm status` shows its state.",
                         retry_after_s=seconds_until_half_open)


def scrub(text: str, secret: str | None) -> str:
    """``text`` shortened for quoting, with ``secret`` masked wherever it appears.

    Some APIs echo the key they were sent in their 401 body; a key must never
    reach an exception message, a log line or a client.
    """
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > MAX_QUOTED_CHARS:
        text = text[:MAX_QUOTED_CHARS] + "..."
    return text
