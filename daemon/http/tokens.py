"""The daemon's own API token: from the config, or from the OS keyring.

This is the token clients present to localllm, not a cloud provider key.
"""

from __future__ import annotations

import logging
import os
import re
import secrets

from localllm.config import Settings
from localllm.errors import ConfigError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "localllm"
KEYRING_ENTRY = "api-token"


def _keyring():
    import keyring
    import keyring.errors

    return keyring, keyring.errors


def token_from_keyring() -> str | None:
    keyring, errors = _keyring()
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_ENTRY)
    except errors.KeyringError as exc:  # headless boxes often have no keyring service
        log.debug("no keyring available for the API token: %s", exc.__class__.__name__)
        return None


def _entry(namespace: str | None) -> str:
    return KEYRING_ENTRY if namespace is None else f"{KEYRING_ENTRY}:{namespace}"


def namespace_token_env(namespace: str) -> str:
    return "LOCALLLM_TOKEN_" + re.sub(r"[^A-Za-z0-9]", "_", namespace).upper()


def resolve_namespace_tokens(settings: Settings) -> dict[str, str]:
    """namespace -> token for each of server.token_namespaces (keyring, else LOCALLLM_TOKEN_<NS>)."""
    keyring, errors = _keyring()
    tokens = {}
    for namespace in settings.server.token_namespaces:
        try:
            value = keyring.get_password(KEYRING_SERVICE, _entry(namespace))
        except errors.KeyringError:
            value = None
        value = value or os.environ.get(namespace_token_env(namespace))
        if not value:
            raise ConfigError(f"No API token for namespace {namespace!r}: run `localllm token set --namespace "
                              f"{namespace}` (or set {namespace_token_env(namespace)}).")
        tokens[namespace] = value
    return tokens


def resolve_api_token(settings: Settings) -> str | None:
    if settings.server.api_token is not None:
        return settings.server.api_token.get_secret_value() or None
    return token_from_keyring()


def store_token_in_keyring(token: str | None = None, namespace: str | None = None) -> str:
    """Save ``token`` (or a fresh random one) in the OS keyring and return it."""
    keyring, errors = _keyring()
    token = token or secrets.token_urlsafe(32)
    try:
        keyring.set_password(KEYRING_SERVICE, _entry(namespace), token)
    except errors.KeyringError as exc:
        raise ConfigError(
            f"No usable OS keyring here ({exc.__class__.__name__}). On a headless box set the token with the "
            "LOCALLLM_SERVER_API_TOKEN environment variable (e.g. in the service unit's EnvironmentFile) "
            "instead.") from None
    return token


def remove_token_from_keyring(namespace: str | None = None) -> bool:
    keyring, errors = _keyring()
    try:
        keyring.delete_password(KEYRING_SERVICE, _entry(namespace))
        return True
    except errors.PasswordDeleteError:
        return False
    except errors.KeyringError as exc:
        raise ConfigError(f"No usable OS keyring here ({exc.__class__.__name__}).") from None
