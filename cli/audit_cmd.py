"""`localllm audit`: every request that left the device, newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.store.database import database_path, open_database
from localllm.store.egress_audit import recent_egress

COLUMNS = ("created_at", "upstream", "trust", "model", "action", "redacted", "reason", "content_sha256")


@click.command()
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="How many rows.")
@click.option("--upstream", help="Only requests sent to this upstream.")
@click.option("--days", type=click.IntRange(min=1), help="Only the last N days.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@user_errors
def audit_command(limit: int, upstream: str | None, days: int | None, as_json: bool) -> None:
    """List egress: when, to which upstream, what was redacted (types and counts, never values),
    why it left, and a hash of exactly what was sent."""
    load_cli_settings()
    if not database_path().exists():
        click.echo("Nothing has left this device (no database yet).", err=True)
        return
    since = None
    if days is not None:
        since = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    rows = recent_egress(open_database(), limit=limit, upstream=upstream, since=since)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo("Nothing has left this device" + (f" for {upstream}" if upstream else "") + ".", err=True)
        return
    click.echo("  ".join(COLUMNS))
    for row in rows:
        redacted = ",".join(f"{k}={v}" for k, v in row["redacted"].items()) or "-"
        cells = {**row, "redacted": redacted, "content_sha256": row["content_sha256"][:16]}
        click.echo("  ".join("-" if cells.get(c) is None else str(cells[c]) for c in COLUMNS))
