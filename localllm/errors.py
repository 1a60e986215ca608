"""User-facing errors. Each message says what went wrong and how to fix it.

Library code raises these; the HTTP edge turns them into OpenAI-shaped error
bodies (``status``, ``error_type``, ``code``, ``param``) and the CLI edge into a
one-line message with a non-zero exit. Nothing deeper converts them.
"""

from __future__ import annotations


class LocalLLMError(Exception):
    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_openai(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(LocalLLMError):
    status = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(LocalLLMError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ForbiddenHost(LocalLLMError):
    status = 403
    error_type = "permission_error"
    code = "host_not_allowed"


class ForbiddenOrigin(LocalLLMError):
    status = 403
    error_type = "permission_error"
    code = "origin_not_allowed"


class UnsupportedMediaType(LocalLLMError):
    status = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


class NotFound(LocalLLMError):
    """What the request asks for does not exist here (and waiting will not make it)."""

    status = 404
    error_type = "invalid_request_error"


class ModelNotFound(LocalLLMError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(LocalLLMError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class ServiceUnavailable(LocalLLMError):
    """The daemon cannot take the request right now; the client should retry."""

    status = 503
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class RateLimited(LocalLLMError):
    """Too many requests with one token; the client should wait ``retry_after_s``."""

    status = 429
    error_type = "requests"  # OpenAI's type for rate limits
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(ServiceUnavailable):
    code = "queue_full"


class ModelLoading(ServiceUnavailable):
    code = "model_loading"


class ConfigError(LocalLLMError):
    error_type = "config_error"


class ModelPullError(LocalLLMError):
    """A pull that cannot be done as asked (the message says why and what to do)."""

    status = 400
    error_type = "model_pull_error"


class UnsafeModelName(ModelPullError):
    pass


class ChecksumMismatch(ModelPullError):
    pass


class InvalidGGUF(LocalLLMError):
    status = 422
    error_type = "invalid_model_file"

    def __init__(self, message: str, *, reason: str):
        super().__init__(message, code="invalid_gguf")
        self.reason = reason  # the problem alone, for callers that word their own message


class DaemonUnreachable(LocalLLMError):
    status = 503
    error_type = "connection_error"


class StartupFailed(LocalLLMError):
    """A part the daemon needs could not be opened; the message names it."""

    error_type = "startup_error"
