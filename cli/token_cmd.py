"""`localllm token set|rm`: the daemon's API token in the OS keyring."""

from __future__ import annotations

import sys

import click

from localllm.daemon.tokens import remove_token_from_keyring, store_token_in_keyring

from .context import user_errors


@click.group()
def token_group() -> None:
    """Manage the API token clients must present (kept in the OS keyring)."""


@token_group.command("set")
@click.option("--generate", is_flag=True, help="Create a random token and print it once.")
@user_errors
def set_token(generate: bool) -> None:
    """Store the API token (prompted without echo, or read from stdin)."""
    if generate:
        click.echo(store_token_in_keyring())
        return
    if sys.stdin.isatty():
        value = click.prompt("API token", hide_input=True).strip()
    else:
        value = sys.stdin.readline().strip()
    if not value:
        raise click.ClickException("Empty token; nothing stored.")
    store_token_in_keyring(value)
    click.echo("Stored the API token in the OS keyring.", err=True)


@token_group.command("rm")
@user_errors
def remove_token() -> None:
    """Remove the API token from the OS keyring."""
    if not remove_token_from_keyring():
        raise click.ClickException("No API token is stored in the keyring.")
    click.echo("Removed.", err=True)
