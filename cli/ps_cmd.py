"""`localllm ps`: the models the running daemon has loaded, their memory, requests and expiry."""

from __future__ import annotations

import asyncio
import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.cli.daemon_client import DaemonClient
from localllm.daemon.http.tokens import resolve_api_token

COLUMNS = ("NAME", "SIZE", "VRAM", "STATE", "IN FLIGHT", "SLOTS", "UNTIL")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (Ollama's /api/ps shape).")
@user_errors
def ps_command(as_json: bool) -> None:
    """List the loaded models: size, size in VRAM, requests in flight, slots, and when each unloads."""
    settings = load_cli_settings().settings
    client = DaemonClient(settings, resolve_api_token(settings))
    loaded = asyncio.run(client.get_json("/api/ps"))["models"]
    if as_json:
        click.echo(json.dumps(loaded, indent=2))
        return
    rows = [COLUMNS] + [_row(model) for model in loaded]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not loaded:
        click.echo("(no model loaded: each loads on its first request)")


def _row(model: dict) -> tuple[str, ...]:
    extra = model.get("localllm", {})
    until = "forever" if model["expires_at"].startswith("2318") else model["expires_at"]
    if extra.get("in_flight"):
        until = "in use"
    slots = f"{extra.get('parallel')} ({extra.get('parallel_source')})"
    return (model["name"], f"{model['size'] / 2**20:.0f} MiB", f"{model['size_vram'] / 2**20:.0f} MiB",
            str(extra.get("state", "ready")), str(extra.get("in_flight", 0)), slots, until)
