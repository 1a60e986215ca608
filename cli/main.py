"""`localllm`: the command group. Each command lives in its own small module."""

from __future__ import annotations

import logging

import click

from localllm import __version__
from localllm.cli.ask_cmd import ask_command
from localllm.cli.audit_cmd import audit_command
from localllm.cli.cache_cmd import cache_group
from localllm.cli.config_cmd import config_group
from localllm.cli.keys_cmd import keys_group
from localllm.cli.logs_cmd import logs_command
from localllm.cli.models_cmd import models_group, pull_command
from localllm.cli.ps_cmd import ps_command
from localllm.cli.serve_cmd import serve_command
from localllm.cli.service_cmd import service_group
from localllm.cli.stats_cmd import stats_command
from localllm.cli.status_cmd import status_command
from localllm.cli.token_cmd import token_group
from localllm.cli.upstreams_cmd import upstreams_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localllm")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Local-first LLM daemon: GGUF models on this machine, OpenAI-compatible API on localhost."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(ask_command, name="ask")
cli.add_command(serve_command, name="serve")
cli.add_command(status_command, name="status")
cli.add_command(ps_command, name="ps")
cli.add_command(models_group, name="models")
cli.add_command(pull_command, name="pull")
cli.add_command(config_group, name="config")
cli.add_command(token_group, name="token")
cli.add_command(logs_command, name="logs")
cli.add_command(cache_group, name="cache")
cli.add_command(keys_group, name="keys")
cli.add_command(upstreams_group, name="upstreams")
cli.add_command(stats_command, name="stats")
cli.add_command(audit_command, name="audit")
cli.add_command(service_group, name="service")


def main() -> None:
    cli(prog_name="localllm")
