"""The door: Host-header check (DNS rebinding), Origin check (no web page may drive
the daemon), bearer-token auth, CORS.

Loopback binds accept only loopback Host names unless more are allowed in the
config: a web page on evil.example that rebinds its name to 127.0.0.1 must not
reach the API (Ollama's CVE-2024-28224). A request that a browser sends on behalf
of a page carries that page's Origin: unless the origin is the daemon's own or
listed in ``server.cors_origins`` it is refused, whatever its content type (a
"simple" cross-site POST needs no preflight). Any bind but loopback requires a
token.
"""

from __future__ import annotations

import hmac
import ipaddress
import re

from aiohttp import web

from localllm.errors import AuthenticationFailed, ForbiddenHost, ForbiddenOrigin

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# host[:port]: a DNS name or IPv4 address, or a bracketed IPv6 address; the port all digits.
_HOST_HEADER = re.compile(r"^(?:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})?)|\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\])"
                          r"(?::(?P<port>[0-9]{1,5}))?$")


def host_header_name(value: str | None) -> str:
    """The host part of a Host header ('' when missing or malformed: ``localhost:80@evil.com``,
    ``:8765``, a bare IPv6 address, spaces...)."""
    if not value:
        return ""
    match = _HOST_HEADER.match(value)
    if match is None:
        return ""
    return match.group("name") or match.group("ipv6")


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
        if not self.allows(request):
            raise AuthenticationFailed(
                "Missing or wrong API token: send `Authorization: Bearer <token>` "
                "(the daemon's server.api_token or the one set with `localllm token set`).")

    def allows(self, request: web.Request) -> bool:
        """Whether the request carries a valid token (always, when none is configured); notes its namespace."""
        if not self.tokens:
            request[TOKEN_NAMESPACE] = None
            return True
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented_bytes = presented.strip().encode()
        matched = None
        for token, namespace in self.tokens:  # compare with every token: the time taken says nothing
            if hmac.compare_digest(presented_bytes, token) and scheme.lower() == "bearer":
                matched = (namespace,)
        if matched is None:
            return False
        request[TOKEN_NAMESPACE] = matched[0]
        return True


class OriginCheck:
    """Browsers name the page behind a request in its Origin header; only the daemon's own
    origin and ``server.cors_origins`` may drive it. Clients that are not browsers send no Origin."""

    def __init__(self, cors_origins: list[str], allowed_hosts: list[str]):
        self.allowed = {origin.rstrip("/").lower() for origin in cors_origins}
        self.own_names = {name.strip().lower() for name in allowed_hosts if name.strip()}

    def check(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None or "*" in self.allowed or origin.rstrip("/").lower() in self.allowed:
            return
        host = request.headers.get("Host", "")
        name = host_header_name(host).lower()
        own = name and (is_loopback_host(name) or name in self.own_names)
        if own and origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower()):
            return  # a page the daemon itself serves, under a name it answers to
        raise ForbiddenOrigin(
            "Requests from web pages are refused unless their origin is listed in server.cors_origins "
            "(a page on another site must not drive the daemon).")


def cors_headers(request: web.Request, origins: list[str]) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not origins or (origin not in origins and "*" not in origins):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-LocalLLM-Namespace, X-LocalLLM-Escalation, "
                                        "Cache-Control",
        "Access-Control-Expose-Headers": "X-LocalLLM-Route, X-LocalLLM-Route-Reason, X-LocalLLM-Fallback-Reason, "
                                         "X-LocalLLM-Cache, X-LocalLLM-Cache-Similarity",
        "Vary": "Origin",
    }
