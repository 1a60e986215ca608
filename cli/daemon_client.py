"""Talk to a running daemon over its OpenAI-compatible API (used by `ask` and `status`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp

from localllm.config import Settings
from localllm.errors import DaemonUnreachable, LocalLLMError


def daemon_base_url(settings: Settings) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


class DaemonError(LocalLLMError):
    """An error the daemon answered with; its message is the daemon's own."""


class DaemonClient:
    def __init__(self, settings: Settings, api_token: str | None):
        self.base_url = daemon_base_url(settings)
        self.headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}

    async def health(self, timeout_s: float = 1.0) -> dict | None:
        """The daemon's /health body, or None when no localllm daemon answers."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
                async with session.get(self.base_url + "/health", headers=self.headers) as response:
                    body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if not isinstance(body, dict) or (body.get("service") != "localllm" and "models" not in body):
            return None  # something else listens on this port
        return body

    async def get_json(self, path: str, timeout_s: float = 5.0) -> dict:
        """GET one of the daemon's JSON endpoints; DaemonUnreachable when no daemon answers."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
                async with session.get(self.base_url + path, headers=self.headers) as response:
                    payload = await response.json(content_type=None)
                    if response.status != 200:
                        raise _daemon_error(payload, response.status)
                    return payload
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise DaemonUnreachable(f"No localllm daemon answers at {self.base_url}: start it with "
                                    "`localllm serve`.") from None

    async def chat(self, body: dict) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.post(self.base_url + "/v1/chat/completions", json=body,
                                    headers=self.headers) as response:
                payload = await response.json(content_type=None)
                if response.status != 200:
                    raise _daemon_error(payload, response.status)
                return payload

    async def stream_chat(self, body: dict) -> AsyncIterator[dict]:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(self.base_url + "/v1/chat/completions", json={**body, "stream": True},
                                        headers=self.headers) as response:
                    if response.status != 200:
                        raise _daemon_error(await response.json(content_type=None), response.status)
                    async for raw in response.content:
                        line = raw.decode("utf-8").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        chunk = json.loads(data)
                        if "error" in chunk:
                            raise _daemon_error(chunk, 500)
                        yield chunk
        except aiohttp.ClientError as exc:
            raise DaemonUnreachable(f"Lost the connection to the daemon at {self.base_url}: {exc}.") from None


def _daemon_error(payload: object, status: int) -> DaemonError:
    message = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
    elif isinstance(payload, dict) and isinstance(payload.get("error"), str):  # Ollama's shape
        message = payload["error"]
    return DaemonError(message or f"The daemon answered HTTP {status}.")
