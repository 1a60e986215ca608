"""[server]: where the daemon listens and who may call it."""

from __future__ import annotations

from pydantic import Field, SecretStr

from localllm.config.section import Section


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address to bind. Anything but loopback requires api_token.")
    port: int = Field(8765, ge=1, le=65535, description="TCP port to listen on.")
    api_token: SecretStr | None = Field(
        None, description="Bearer token clients must send. Required when host is not loopback. "
        "Prefer `localllm token set` (OS keyring) over writing it here.")
    token_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces with a token of their own (`localllm token set --namespace "
        "NS`): requests with that token always use that namespace.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Extra Host header names accepted besides loopback names "
        "(DNS-rebinding protection).")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser. Empty: CORS off.")
    rate_limit_per_minute: int = Field(
        0, ge=0, le=1_000_000, description="Requests a minute allowed per API token (callers without a token "
        "share one allowance); beyond it, 429 with Retry-After. 0 = no limit.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, le=3600, description="On SIGTERM or Ctrl-C, how long requests in flight may take to finish "
        "(no new ones are taken); then they are cut off and the daemon exits.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds a client has to send request headers.")
