"""Pulls that try to write where they should not, or more than they should: a symbolic link planted
in the models dir, a download that would fill the disk or outgrows its known size, an https URL that
redirects to plain http. Each is refused and nothing is written outside the models dir."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest
from aiohttp import web

from localllm.daemon.models import http_download
from localllm.daemon.models.model_files import ModelFiles
from localllm.daemon.models.puller import pull
from localllm.errors import ModelPullError
from tests.daemon.file_server import files_in


def test_a_symlink_planted_in_the_models_dir_is_not_written_through(file_server, models, tiny, tmp_path):
    url = file_server.serve("/m.gguf", tiny)
    outside = tmp_path / "precious.txt"
    outside.write_text("do not touch")
    files = ModelFiles(models)
    files.ensure_dir()
    partial = files.partial_path_for("m.gguf", url)
    os.symlink(outside, partial)
    with pytest.raises(ModelPullError, match="symbolic link"):
        pull(url, models)
    assert outside.read_text() == "do not touch"


def test_a_download_past_its_known_size_is_refused_and_removed(file_server, models, tiny):
    url = file_server.serve("/big.gguf", tiny + b"\0" * 4096, chunked=True)
    partial = models / "big.part"
    models.mkdir(parents=True)
    with pytest.raises(http_download.Oversized, match="more than"):
        http_download.download(url, partial, max_bytes=len(tiny))
    with pytest.raises(http_download.Oversized, match="refusing"):
        http_download.download(file_server.serve("/big2.gguf", tiny + b"\0" * 4096), models / "big2.part",
                               max_bytes=len(tiny))


def test_a_download_that_would_fill_the_disk_is_stopped(file_server, mount_tmpfs, tiny):
    models_on_small_disk = mount_tmpfs("small-models", size="8m")
    # No size in advance (chunked): only watching the free space while writing can stop it.
    url = file_server.serve("/huge.gguf", tiny + b"\0" * (6 * 2**20), chunked=True)
    with pytest.raises(ModelPullError, match="would fill the disk"):
        pull(url, models_on_small_disk / "models")
    assert files_in(models_on_small_disk / "models") == []


@pytest.fixture
def https_redirector(tmp_path):
    """An https server on 127.0.0.1 (its own certificate) whose every path redirects to plain http."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    target: dict[str, str] = {}

    async def redirect(request):
        raise web.HTTPFound(target["url"])

    loop = __import__("asyncio").new_event_loop()
    ready, port = threading.Event(), []

    def run():
        app = web.Application()
        app.router.add_get("/{tail:.*}", redirect)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port.append(probe.getsockname()[1])
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port[0], ssl_context=context).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"https://127.0.0.1:{port[0]}", cert_file, target
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_an_https_pull_that_redirects_to_http_is_refused(https_redirector, file_server, tiny, tmp_path, localllm_home):
    base, cert_file, target = https_redirector
    target["url"] = file_server.serve("/model.gguf", tiny)
    env = {**os.environ, "SSL_CERT_FILE": str(cert_file), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
           "LOCALLLM_HOME": str(localllm_home)}
    result = subprocess.run([sys.executable, "-m", "localllm.cli", "pull", f"{base}/model.gguf"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "unencrypted" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert file_server.requests == [] or all(path == "/model.gguf" for path, _ in file_server.requests)
    assert files_in(localllm_home / "data" / "models") == []
