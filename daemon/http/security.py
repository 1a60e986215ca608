"""The door: Host-header check (DNS rebinding), bearer-token auth, CORS.

Loopback binds accept only loopback Host names unless more are allowed in the
config: a web page on evil.example that rebinds its name to 127.0.0.1 must not
reach the API (Ollama's CVE-2024-28224). Any other bind requires a token.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from localllm.errors import AuthenticationFailed, ForbiddenHost

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_header_name(value: str | None) -> str:
    """The host part of a Host header ('' when missing or malformed)."""
    if not value:
        return ""
    value = value.strip()
    if value.startswith("["):  # [::1]:8765
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") > 1:  # a bare IPv6 address is not a valid Host header
        return ""
    return value.split(":", 1)[0]


class HostCheck:
    def __init__(self, bind_host: str, allowed_hosts: list[str]):
        self.enforce = is_loopback_host(bind_host)
        self.allowed = {name.strip().lower() for name in allowed_hosts if name.strip()}

    def check(self, request: web.Request) -> None:
        if not self.enforce and not self.allowed:
            return
        name = host_header_name(request.headers.get("Host")).lower()
        if name and (name in self.allowed or (self.enforce and is_loopback_host(name))):
            return
        raise ForbiddenHost(
            "This Host header is not allowed. Call the daemon as localhost or 127.0.0.1, "
            "or add the name to server.allowed_hosts.")


# The namespace the caller's token is bound to (None: the main token, any namespace).
TOKEN_NAMESPACE = web.RequestKey("token_namespace", str | None)


class TokenCheck:
    """Bearer tokens: the daemon's main token (any namespace, chosen by header) and
    namespace tokens, each bound to one namespace so its cache entries stay its own."""

    def __init__(self, token: str | None, namespace_tokens: dict[str, str] | None = None):
        self.tokens: list[tuple[bytes, str | None]] = [(token.encode(), None)] if token else []
        self.tokens += [(value.encode(), namespace) for namespace, value in (namespace_tokens or {}).items()]

    def check(self, request: web.Request) -> None:
        if not self.tokens:
            return
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented_bytes = presented.strip().encode()
        matched = None
        for token, namespace in self.tokens:  # compare with every token: the time taken says nothing
            if hmac.compare_digest(presented_bytes, token) and scheme.lower() == "bearer":
                matched = (namespace,)
        if matched is None:
            raise AuthenticationFailed(
                "Missing or wrong API token: send `Authorization: Bearer <token>` "
                "(the daemon's server.api_token or the one set with `localllm token set`).")
        request[TOKEN_NAMESPACE] = matched[0]


def cors_headers(request: web.Request, origins: list[str]) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not origins or (origin not in origins and "*" not in origins):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-LocalLLM-Namespace",
        "Access-Control-Expose-Headers": "X-LocalLLM-Route",
        "Vary": "Origin",
    }
