"""`localllm service install|uninstall|status|render`: run the daemon as a service."""

from __future__ import annotations

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.daemon.service import manager
from localllm.daemon.service.units import KINDS, ServiceSpec, render
from localllm.paths import home_override

KIND_OPTIONS = [
    click.option("--user", "kind", flag_value="systemd-user", help="Linux: a systemd unit for your user."),
    click.option("--system", "kind", flag_value="systemd-system",
                 help="Linux: a system-wide unit run by the unprivileged user localllm (as root)."),
    click.option("--launchd", "kind", flag_value="launchd", help="macOS: a launch agent for your user."),
    click.option("--windows-task", "kind", flag_value="windows-task", help="Windows: a task at logon."),
]


def kind_options(function):
    for option in reversed(KIND_OPTIONS):
        function = option(function)
    return function


@click.group()
def service_group() -> None:
    """Run the daemon as a service (systemd, launchd or the Windows task scheduler). The platform's kind
    is the default: a systemd user unit on Linux (system-wide as root), a launch agent on macOS."""


def _spec() -> ServiceSpec:
    settings = load_cli_settings().settings
    home = home_override()
    return ServiceSpec.for_this_install(str(home) if home else None, settings.server.shutdown_grace_s)


@service_group.command("install")
@kind_options
@click.option("--dry-run", is_flag=True, help="Print the file and the commands instead of installing.")
@user_errors
def install_command(kind: str | None, dry_run: bool) -> None:
    """Write the service file for this installation and start it."""
    kind = kind or manager.default_kind()
    spec = _spec()
    where = manager.placement(kind)
    if dry_run:
        click.echo(f"# {where.path}")
        click.echo(render(kind, spec))
        for command in where.enable:
            click.echo("$ " + " ".join(command))
        return
    manager.install(kind, spec)
    click.echo(f"Installed {where.path} and started it; `localllm service status` shows how it runs.")


@service_group.command("uninstall")
@kind_options
@user_errors
def uninstall_command(kind: str | None) -> None:
    """Stop the service and remove its file."""
    where = manager.uninstall(kind or manager.default_kind())
    click.echo(f"Stopped and removed {where.path}.")


@service_group.command("status")
@kind_options
@user_errors
def status_command(kind: str | None) -> None:
    """Whether the service is installed, and what its manager says of it."""
    where, installed, said = manager.status(kind or manager.default_kind())
    click.echo(f"{where.kind}: {'installed at ' + str(where.path) if installed else 'not installed'}"
               + (f" ({said})" if installed else ""))
    if not installed:
        raise SystemExit(1)


@service_group.command("render")
@click.argument("kind", type=click.Choice(KINDS))
@user_errors
def render_command(kind: str) -> None:
    """Print the service file of KIND for this installation, without installing it."""
    click.echo(render(kind, _spec()), nl=False)
