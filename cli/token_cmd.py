"""`localllm token set|rm`: the daemon's API token in the OS keyring."""

from __future__ import annotations

import sys

import click

from localllm.cli.context import user_errors
from localllm.daemon.http.tokens import remove_token_from_keyring, store_token_in_keyring


@click.group()
def token_group() -> None:
    """Manage the API token clients must present (kept in the OS keyring)."""


NAMESPACE_OPTION = click.option("--namespace", help="A token bound to this namespace (also list it in "
                                "server.token_namespaces); without it, the daemon's main token.")


@token_group.command("set")
@click.option("--generate", is_flag=True, help="Create a random token and print it once.")
@NAMESPACE_OPTION
@user_errors
def set_token(generate: bool, namespace: str | None) -> None:
    """Store the API token (prompted without echo, or read from stdin)."""
    if generate:
        click.echo(store_token_in_keyring(namespace=namespace))
        return
    if sys.stdin.isatty():
        value = click.prompt("API token", hide_input=True).strip()
    else:
        value = sys.stdin.readline().strip()
    if not value:
        raise click.ClickException("Empty token; nothing stored.")
    store_token_in_keyring(value, namespace=namespace)
    click.echo("Stored the API token in the OS keyring.", err=True)


@token_group.command("rm")
@NAMESPACE_OPTION
@user_errors
def remove_token(namespace: str | None) -> None:
    """Remove the API token from the OS keyring."""
    if not remove_token_from_keyring(namespace):
        raise click.ClickException("No API token is stored in the keyring.")
    click.echo("Removed.", err=True)
