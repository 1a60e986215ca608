"""`localllm upstreams list|test NAME`: the configured upstreams, and a live check of one."""

from __future__ import annotations

import asyncio
import time

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.cli.daemon_client import DaemonClient
from localllm.daemon.http.tokens import resolve_api_token
from localllm.fallback.errors import UpstreamError
from localllm.fallback.keys import get_key, locate_key
from localllm.fallback.providers import UpstreamRequest
from localllm.fallback.upstream_registry import UpstreamRegistry


@click.group()
def upstreams_group() -> None:
    """Stronger models elsewhere: cloud APIs and on-prem engines ([[upstreams]] in the config)."""


@upstreams_group.command("list")
@user_errors
def list_command() -> None:
    """Name, kind, address, model, trust, prices, and where the key is; with a running daemon, each
    endpoint's circuit and requests in flight."""
    settings = load_cli_settings().settings
    if not settings.upstreams:
        click.echo("No upstreams configured. Add [[upstreams]] tables to the config file (`localllm config path`).")
        return
    health = asyncio.run(DaemonClient(settings, resolve_api_token(settings)).health(timeout_s=1.0)) or {}
    live = {u["name"]: {e["url"]: e for e in u.get("endpoints", [])} for u in health.get("upstreams", [])}
    for upstream in settings.upstreams:
        key = locate_key(upstream.name).where
        address = upstream.url if len(upstream.endpoints) == 1 else f"pool of {len(upstream.endpoints)}"
        click.echo(f"{upstream.name}  {upstream.kind}  {address}  model={upstream.model}  trust={upstream.trust}  "
                   f"${upstream.price_input_per_mtok}/${upstream.price_output_per_mtok} per Mtok  key={key}")
        for url in upstream.endpoints:
            state = live.get(upstream.name, {}).get(url)
            seen = (f"circuit {state['circuit']}, {state['in_flight']} in flight, {state['failures']} failures"
                    if state else "daemon not running: no live state")
            click.echo(f"  {url}  {seen}")


@upstreams_group.command("test")
@click.argument("name")
@user_errors
def test_command(name: str) -> None:
    """Send one tiny request to upstream NAME and report the latency or the exact failure."""
    settings = load_cli_settings().settings
    registry = UpstreamRegistry(settings.upstreams)
    upstream = registry.get(name)
    key = get_key(name)
    if key is None and upstream.settings.kind != "openai-compatible":
        raise click.ClickException(f"No API key for {name}: run `localllm keys set {name}`.")

    async def probe() -> tuple[float, float, str]:
        started = time.perf_counter()
        first = None
        text = []
        try:
            request = UpstreamRequest(messages=[{"role": "user", "content": "Reply with the word OK."}],
                                      max_tokens=5)
            async for event in upstream.stream_chat(request, key):
                first = first or time.perf_counter()
                text.append(getattr(event, "text", ""))
        finally:
            await registry.close()
        return (first or time.perf_counter()) - started, time.perf_counter() - started, "".join(text)

    try:
        first_s, total_s, text = asyncio.run(probe())
    except UpstreamError as exc:
        raise click.ClickException(f"{name} failed ({exc.reason}): {exc.message}") from None
    click.echo(f"{name} OK: first token {first_s * 1000:.0f} ms, total {total_s * 1000:.0f} ms, "
               f"answered {text.strip()[:60]!r}")
