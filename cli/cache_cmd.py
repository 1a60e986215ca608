"""`localllm cache stats|clear|export`: look into and empty the semantic cache."""

from __future__ import annotations

import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.store.database import database_path, open_database
from localllm.store.semantic_cache import cache_stats, entry_filter


@click.group()
def cache_group() -> None:
    """The semantic cache."""


def _db():
    load_cli_settings()
    if not database_path().exists():
        raise click.ClickException("No database yet: nothing has been cached.")
    return open_database()


@cache_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def stats(as_json: bool) -> None:
    """Entries, hits and size per namespace and model."""
    rows = cache_stats(_db())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("The cache is empty.")
        return
    click.echo("namespace  model  entries  hits  bytes")
    for row in rows:
        click.echo(f"{row['namespace']}  {row['model']}  {row['entries']}  {row['hits'] or 0}  {row['bytes']}")


@cache_group.command("clear")
@click.option("--namespace", help="Only this namespace.")
@click.option("--model", help="Only answers of this model.")
@user_errors
def clear(namespace: str | None, model: str | None) -> None:
    """Delete cached answers (all, or one namespace and/or model). A running daemon forgets them on restart;
    use DELETE /v1/localllm/cache to clear a running daemon's namespace at once."""
    db = _db()
    clause, params = entry_filter(namespace or None, model or None)
    with db.atomic():
        removed = db.execute(f"DELETE FROM cache_entries WHERE {clause}", params).rowcount
    click.echo(f"Removed {removed} cached answers.")


@cache_group.command("export")
@click.option("--namespace", help="Only this namespace.")
@user_errors
def export(namespace: str | None) -> None:
    """Write cached question/answer pairs as JSON lines to stdout (no embeddings)."""
    db = _db()
    clause, params = entry_filter(namespace or None)
    for row in db.query("SELECT namespace, model, question, answer, created_at, last_used_at, hits FROM cache_entries "
                        f"WHERE {clause} ORDER BY id", params):
        row = dict(row)
        row["answer"] = json.loads(row["answer"])
        click.echo(json.dumps(row, ensure_ascii=False))


