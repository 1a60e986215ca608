"""`localllm keys set|list|rm`: upstream API keys in the OS keyring (values never printed)."""

from __future__ import annotations

import sys

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.fallback.keys import locate_key, remove_key, set_key


@click.group()
def keys_group() -> None:
    """API keys for upstreams (cloud APIs, on-prem engines), kept in the OS keyring."""


@keys_group.command("set")
@click.argument("name")
@user_errors
def set_command(name: str) -> None:
    """Store the key for upstream NAME (prompted without echo, or read from stdin)."""
    if sys.stdin.isatty():
        value = click.prompt(f"API key for {name}", hide_input=True).strip()
    else:
        value = sys.stdin.readline().strip()
    if not value:
        raise click.ClickException("Empty key; nothing stored.")
    set_key(name, value)
    click.echo(f"Stored the key for {name} in the OS keyring.", err=True)


@keys_group.command("list")
@user_errors
def list_command() -> None:
    """Each configured upstream and where its key is (never the key itself)."""
    settings = load_cli_settings().settings
    if not settings.upstreams:
        click.echo("No upstreams configured ([[upstreams]] in the config file).")
        return
    for upstream in settings.upstreams:
        location = locate_key(upstream.name)
        warning = "  (less safe: environment variable)" if location.less_safe else ""
        click.echo(f"{upstream.name}  {location.where}{warning}")


@keys_group.command("rm")
@click.argument("name")
@user_errors
def rm_command(name: str) -> None:
    """Remove the key for upstream NAME from the OS keyring."""
    if not remove_key(name):
        raise click.ClickException(f"No key for {name} in the keyring.")
    click.echo("Removed.", err=True)
