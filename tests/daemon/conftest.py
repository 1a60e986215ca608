"""Fixtures for the daemon tests that talk to upstreams."""

from __future__ import annotations

import keyring
import pytest

from tests.conftest import MemoryKeyring
from tests.fallback.conftest import SENTINEL_KEY
from tests.fallback.fake_upstream import FakeUpstream


@pytest.fixture
async def fake_cloud():
    server = await FakeUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
def upstream_key():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    backend.set_password("localllm-upstream", "cloudy", SENTINEL_KEY)
    yield backend
    keyring.set_keyring(previous)
