"""Upstream API keys: in the OS keyring, or (last resort) an environment variable.

Lookup order per upstream NAME: the OS keyring (service ``localllm-upstream``,
entry NAME), then ``LOCALLLM_KEY_<NAME>`` (upper-case, '-' and '.' as '_').
The environment fallback exists for headless boxes without a keyring service;
`localllm keys list` and `config show` flag it as less safe. Values never appear
in logs, errors or reprs. Keyring calls can block (D-Bus): run them off the loop.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from localllm.errors import ConfigError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "localllm-upstream"
NO_KEYRING_FIX = (
    "No usable OS keyring here. On a desktop, start its keyring (Secret Service, Keychain, Credential Locker). "
    "On a headless box either install an encrypted file keyring (pip install keyrings.cryptfile and set "
    "PYTHON_KEYRING_BACKEND=keyrings.cryptfile.cryptfile.CryptFileKeyring) or, as a last resort, put the key "
    "in the environment as {env} (e.g. a systemd EnvironmentFile readable by the service user only).")


def env_name(upstream: str) -> str:
    return "LOCALLLM_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", upstream).upper()


@dataclass(frozen=True)
class KeyLocation:
    name: str
    where: str  # "keyring" | "env LOCALLLM_KEY_..." | "missing"
    less_safe: bool


def _keyring():
    import keyring
    import keyring.errors

    return keyring, keyring.errors


def get_key(upstream: str) -> str | None:
    keyring, errors = _keyring()
    try:
        value = keyring.get_password(KEYRING_SERVICE, upstream)
    except errors.KeyringError:
        value = None
    if value:
        return value
    return os.environ.get(env_name(upstream)) or None


def set_key(upstream: str, value: str) -> None:
    keyring, errors = _keyring()
    try:
        keyring.set_password(KEYRING_SERVICE, upstream, value)
    except errors.KeyringError:
        raise ConfigError(NO_KEYRING_FIX.format(env=env_name(upstream))) from None


def remove_key(upstream: str) -> bool:
    keyring, errors = _keyring()
    try:
        keyring.delete_password(KEYRING_SERVICE, upstream)
        return True
    except errors.PasswordDeleteError:
        return False
    except errors.KeyringError:
        raise ConfigError(NO_KEYRING_FIX.format(env=env_name(upstream))) from None


def locate_key(upstream: str) -> KeyLocation:
    keyring, errors = _keyring()
    try:
        in_keyring = keyring.get_password(KEYRING_SERVICE, upstream) is not None
    except errors.KeyringError:
        in_keyring = False
    if in_keyring:
        return KeyLocation(upstream, "keyring", False)
    if os.environ.get(env_name(upstream)):
        return KeyLocation(upstream, f"env {env_name(upstream)}", True)
    return KeyLocation(upstream, "missing", False)
