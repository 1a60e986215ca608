"""Shared CLI plumbing: effective settings per invocation and error conversion."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from localllm.config import LoadedSettings, load_settings
from localllm.errors import LocalLLMError


def load_cli_settings(flags: dict[str, Any] | None = None) -> LoadedSettings:
    """Effective settings for this command: defaults < file < env < the given flags."""
    try:
        return load_settings(flags)
    except LocalLLMError as exc:
        raise click.ClickException(exc.message) from None


def user_errors(func: Callable) -> Callable:
    """Turn library errors into one-line CLI errors (non-zero exit, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LocalLLMError as exc:
            raise click.ClickException(exc.message) from None
        except KeyboardInterrupt:
            raise click.Abort() from None

    return wrapper
