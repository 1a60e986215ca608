"""`localllm status`: is the daemon up, where, what it serves, how much memory."""

from __future__ import annotations

import asyncio
import json

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.cli.daemon_client import DaemonClient
from localllm.daemon.http.tokens import resolve_api_token


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def status_command(as_json: bool) -> None:
    """Show whether the daemon is running, its address, models and memory."""
    settings = load_cli_settings().settings
    client = DaemonClient(settings, resolve_api_token(settings))
    health = asyncio.run(client.health(timeout_s=2.0))
    if as_json:
        click.echo(json.dumps({"running": health is not None, "address": client.base_url, **(health or {})}, indent=2))
    elif health is None:
        click.echo(f"daemon: not running at {client.base_url} (start it with `localllm serve`)")
    else:
        click.echo(f"daemon: {health['status']} at {client.base_url} (pid {health.get('pid')}, "
                   f"up {health.get('uptime_s')} s, memory {health.get('memory_rss_mb')} MB)")
        if "models" not in health:
            click.echo("details: the daemon shows them only with its API token (`localllm token set`)")
        if "memory_budget_mb" in health:
            click.echo(f"memory: models take {health['models_resident_mb']} of a {health['memory_budget_mb']} MiB "
                       "budget")
        for model in health.get("models", []):
            slots = f"{model['parallel']} slots ({model.get('parallel_source', 'config')})"
            click.echo(f"model:  {model['id']}  {model['state']}  {slots}  in flight={model.get('in_flight', 0)}  "
                       f"waiting={model['waiting']}")
        if health.get("error"):
            click.echo(f"error:  {health['error']}")
        click.echo(f"cache:  {health.get('cache', 'off')}  guard: {health.get('guard', 'off')}  "
                   f"router: {health.get('router', 'off')}")
        for upstream in health.get("upstreams", []):
            pause = f" (half-open in {upstream['half_open_in_s']} s)" if upstream["circuit"] == "open" else ""
            click.echo(f"upstream: {upstream['name']}  circuit {upstream['circuit']}{pause}  "
                       f"failures={upstream['failures']}")
            endpoints = upstream.get("endpoints", [])
            for endpoint in endpoints if len(endpoints) > 1 else []:
                click.echo(f"  {endpoint['url']}  circuit {endpoint['circuit']}  in flight={endpoint['in_flight']}")
    if health is None:
        raise SystemExit(1)
