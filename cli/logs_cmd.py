"""`localllm logs`: recent requests from the request log."""

from __future__ import annotations

import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.store.database import database_path, open_database
from localllm.store.request_log import recent_requests

COLUMNS = ("created_at", "namespace", "endpoint", "model", "route", "cache", "status", "prompt_tokens",
           "completion_tokens", "ttft_ms", "latency_ms", "energy_joules", "energy_source", "error_class")


@click.command()
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="How many requests.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@user_errors
def logs_command(limit: int, as_json: bool) -> None:
    """Show the most recent requests, newest first (no prompt text unless store.log_prompts is on)."""
    load_cli_settings()
    if not database_path().exists():
        click.echo("No requests logged yet.", err=True)
        return
    rows = recent_requests(open_database(), limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo("No requests logged yet.", err=True)
        return
    click.echo("  ".join(COLUMNS))
    for row in rows:
        click.echo("  ".join("-" if row.get(c) is None else str(row[c]) for c in COLUMNS))
