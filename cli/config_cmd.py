"""`localllm config show|path`: the effective settings and where each came from."""

from __future__ import annotations

import json

import click

from localllm import paths
from localllm.cli.context import load_cli_settings
from localllm.config import describe_settings, env_name
from localllm.fallback.keys import locate_key


@click.group()
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(as_json: bool) -> None:
    """Print every setting's effective value and its source (default, file, env, flag). Secrets are hidden."""
    loaded = load_cli_settings()
    rows = describe_settings(loaded)
    for upstream in loaded.settings.upstreams:
        location = locate_key(upstream.name)  # where the key is, never its value
        flag = " (less safe: environment variable; prefer `localllm keys set`)" if location.less_safe else ""
        rows.append((f"upstreams.{upstream.name}.key", location.where + flag, location.where, ""))
    if as_json:
        tables = ("models.", "upstreams.")  # set in the file only
        listing = [{"key": k, "value": v, "source": s, "env": None if k.startswith(tables) else env_name(k)}
                   for k, v, s, _ in rows]
        click.echo(json.dumps(listing, indent=2))
        return
    click.echo(f"# config file: {paths.config_file()}" + ("" if loaded.config_path else " (not present)"))
    width = max(len(k) for k, *_ in rows)
    for key, value, source, _ in rows:
        click.echo(f"{key:<{width}}  {value}  [{source}]")


@config_group.command("path")
def path() -> None:
    """Print where the config file, data and models live."""
    loaded = load_cli_settings()
    click.echo(f"config  {paths.config_file()}")
    click.echo(f"data    {paths.data_dir()}")
    click.echo(f"models  {loaded.settings.resolved_models_dir}")
