"""`localllm stats`: spend per upstream per day, and what the local answers saved."""

from __future__ import annotations

import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.store.database import database_path, open_database
from localllm.store.usage_stats import local_answers, savings_usd, upstream_spend


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="How many days back.")
@click.option("--price-as", "price_as", help="Upstream whose prices value the local answers "
              "(default: the first cloud upstream).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def stats_command(days: int, price_as: str | None, as_json: bool) -> None:
    """Spend per upstream per day, and what the answers served locally would have cost in the cloud."""
    settings = load_cli_settings().settings
    reference = next((u for u in settings.upstreams if (u.name == price_as if price_as else u.trust == "cloud")),
                     None)
    if price_as and reference is None:
        raise click.ClickException(f"No upstream named {price_as!r} in the config.")
    if not database_path().exists():
        click.echo("No requests logged yet.")
        return
    db = open_database()
    spend = upstream_spend(db, days)
    local = local_answers(db, days)
    for row in local:
        row["saved_usd"] = savings_usd(row, reference.price_input_per_mtok,
                                       reference.price_output_per_mtok) if reference else None
    if as_json:
        click.echo(json.dumps({"upstream_spend": spend, "local_answers": local,
                               "priced_as": reference.name if reference else None}, indent=2))
        return
    click.echo("Upstream spend:" if spend else "Upstream spend: none")
    for row in spend:
        click.echo(f"  {row['day']}  {row['upstream']}  {row['requests']} requests  "
                   f"{row['prompt_tokens']}+{row['completion_tokens']} tokens  ${row['cost_usd']:.4f}")
    click.echo("Answered on this device:" if local else "Answered on this device: none")
    for row in local:
        saved = f"  would have cost ${row['saved_usd']:.4f} at {reference.name}" if reference else ""
        click.echo(f"  {row['day']}  {row['requests']} requests ({row['from_cache']} from cache)  "
                   f"{row['prompt_tokens']}+{row['completion_tokens']} tokens{saved}")
    if local and reference is None:
        click.echo("  (configure a cloud upstream, or pass --price-as NAME, to see what that saved)")
