"""`localllm stats`: spend per upstream per day, and what the local answers saved."""

from __future__ import annotations

import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.config.upstreams import first_cloud_upstream
from localllm.store.database import database_path, open_database
from localllm.store.usage_stats import cloud_energy_wh, local_answers, savings_usd, traffic_summary, upstream_spend


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="How many days back.")
@click.option("--price-as", "price_as", help="Upstream whose prices value the local answers "
              "(default: the first cloud upstream).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def stats_command(days: int, price_as: str | None, as_json: bool) -> None:
    """Spend per upstream per day, and what the answers served locally would have cost in the cloud."""
    settings = load_cli_settings().settings
    reference = (next((u for u in settings.upstreams if u.name == price_as), None) if price_as
                 else first_cloud_upstream(settings.upstreams))
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
    traffic = traffic_summary(db, days)
    traffic["if_sent_to_cloud"] = _cloud_comparison(local, traffic, reference, settings.metrics.cloud_wh_per_1k_tokens)
    if as_json:
        click.echo(json.dumps({"upstream_spend": spend, "local_answers": local,
                               "priced_as": reference.name if reference else None, "traffic": traffic}, indent=2))
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
    _echo_traffic(traffic)


def _cloud_comparison(local: list[dict], traffic: dict, reference, wh_per_1k_tokens: float) -> dict:
    """What the answers served here would have cost at the cloud upstream, in USD and estimated energy."""
    answer_tokens = sum(row["completion_tokens"] for row in local)
    energy = traffic["energy"]
    return {"usd": round(sum(row["saved_usd"] for row in local), 6) if reference else None,
            "priced_as": reference.name if reference else None,
            "cloud_wh_estimated": round(cloud_energy_wh(answer_tokens, wh_per_1k_tokens), 4),
            "cloud_wh_per_1k_tokens": wh_per_1k_tokens,
            "cloud_wh_source": "metrics.cloud_wh_per_1k_tokens (default: Epoch AI's 2025 estimate for GPT-4o)",
            "local_wh": round(energy["wh_per_1k_requests"] * energy["requests"] / 1000, 4) if energy else None,
            "local_wh_sources": energy["sources"] if energy else []}


def _echo_traffic(traffic: dict) -> None:
    if not traffic["requests"]:
        return
    click.echo(f"Traffic ({traffic['requests']} answered): {traffic['answered_on_device']:.0%} on this device, "
               f"cache hit rate {_share(traffic['cache_hit_rate'])}, "
               f"${traffic['cost_usd_per_1k_requests']:.4f} per 1,000 requests")
    for route, row in traffic["routes"].items():
        latency, ttft = row["latency_ms"], row["ttft_ms"]
        click.echo(f"  {route:<7} {row['requests']:>6} requests  latency p50/p90/p99 {_ms(latency)}  "
                   f"first token {_ms(ttft)}")
    energy = traffic["energy"]
    if energy:
        label = "measured" if all("estimated" not in source for source in energy["sources"]) else "estimated"
        click.echo(f"Energy ({label}): {energy['wh_per_1k_requests']} Wh per 1,000 requests, "
                   f"{energy['wh_per_1k_tokens']} Wh per 1,000 tokens")
        for title, key in (("prompt", "by_prompt_tokens"), ("answer", "by_answer_tokens")):
            bins = "  ".join(f"{name}: {b['wh_per_1k_requests']} Wh/1k req" for name, b in energy[key].items())
            click.echo(f"  by {title} tokens  {bins}")
    cloud = traffic["if_sent_to_cloud"]
    usd = f"${cloud['usd']:.4f} at {cloud['priced_as']}, " if cloud["usd"] is not None else ""
    click.echo(f"The same answers from the cloud: {usd}~{cloud['cloud_wh_estimated']} Wh (estimated, "
               f"{cloud['cloud_wh_per_1k_tokens']} Wh per 1,000 answer tokens; {cloud['cloud_wh_source']})"
               + (f"; here: {cloud['local_wh']} Wh" if cloud["local_wh"] is not None else ""))


def _ms(percentiles: dict | None) -> str:
    return "-" if percentiles is None else f"{percentiles['p50']}/{percentiles['p90']}/{percentiles['p99']} ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
