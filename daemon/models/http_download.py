"""Resumable HTTP downloads of one model file into a `.partial` file, through aiohttp.

Model files are large and connections drop. Whatever arrived stays in the
partial file: a dropped transfer is retried at once from where it stopped
(HTTP Range), and a pull that gives up leaves the partial file for the next
`localllm pull` of the same source to resume. Servers that ignore Range (200
instead of 206) or refuse it (416) make the download start over.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from localllm import __version__
from localllm.daemon.models.gguf_info import GGUF_MAGIC
from localllm.errors import ModelPullError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total bytes if known)

CHUNK_BYTES = 1 << 20
ATTEMPTS = 4  # per pull; every retry resumes where the previous attempt stopped
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
USER_AGENT = f"localllm/{__version__}"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
OFFLINE_HINT = "No network? Pull from a local file instead: localllm pull /path/to/model.gguf"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str
    advertised_sha256: str | None  # what the server says the file hashes to (Hugging Face X-Linked-Etag)


class NotGGUF(ModelPullError):
    """The server sent something that is not a GGUF file (often an HTML page)."""


class _Interrupted(Exception):
    """The transfer stopped part-way; another attempt may resume it."""


def display_url(url: str) -> str:
    """``url`` without credentials, query or fragment, which may hold tokens (signed links)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _PartialFile:
    """The partial download on disk together with the running hash of its bytes."""

    def __init__(self, handle: BinaryIO, path: Path):
        self.handle = handle
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        handle.seek(0)
        while chunk := handle.read(CHUNK_BYTES):
            self.hasher.update(chunk)
            self.size += len(chunk)
        if self.size and not self.head().startswith(GGUF_MAGIC[: self.size]):
            log.info("partial download does not start like a GGUF file; starting over")
            self.restart()

    def head(self) -> bytes:
        self.handle.seek(0)  # append() seeks back to the end itself
        return self.handle.read(len(GGUF_MAGIC))

    def restart(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.hasher = hashlib.sha256()
        self.size = 0

    def append(self, chunk: bytes) -> None:
        self.handle.seek(self.size)
        self.handle.write(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)


class Oversized(ModelPullError):
    """The download grew past what it may be: its known size, or the disk's reserve."""


# Never fill the disk: a download stops when less than this would stay free.
DISK_RESERVE_BYTES = 256 * 1024 * 1024
DISK_CHECK_EVERY_BYTES = 64 * 1024 * 1024


def download(url: str, partial_path: Path, *, progress: ProgressCallback | None = None,
             max_bytes: int | None = None) -> Downloaded:
    """Download ``url`` into ``partial_path``, resuming what is already there.

    Blocking: runs its own event loop, so call it from a worker thread, never
    from a running loop. The partial file is kept on interruption and on
    errors; the caller deletes it when its content turns out to be wrong.
    """
    try:
        fd = os.open(partial_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0),
                     0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ModelPullError(f"{partial_path} is a symbolic link: localllm never writes through links in the "
                                 "models dir. Remove it and pull again.") from None
        raise
    with os.fdopen(fd, "r+b", buffering=0) as handle:
        _lock_or_fail(handle, partial_path)
        partial = _PartialFile(handle, partial_path)
        result = asyncio.run(_download(url, partial, progress, max_bytes))
        os.fsync(handle.fileno())
        return result


def _lock_or_fail(handle: BinaryIO, path: Path) -> None:
    # Two pulls appending to one partial file would interleave their bytes.
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ModelPullError(
            f"Another pull is already downloading into {path}; wait for it to finish.") from None


async def _download(url: str, partial: _PartialFile, progress: ProgressCallback | None,
                    max_bytes: int | None) -> Downloaded:
    # trust_env: honour HTTPS_PROXY/NO_PROXY like pip and curl do, for networks that need a proxy.
    async with aiohttp.ClientSession(timeout=TIMEOUT, headers={"User-Agent": USER_AGENT}, trust_env=True) as session:
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 2:  # the first retry is immediate; back off only if drops repeat
                await asyncio.sleep(min(2 ** (attempt - 3), 8))
            try:
                return await _attempt(session, url, partial, progress, max_bytes)
            except _Interrupted as exc:
                log.warning("download of %s stopped at %d bytes (attempt %d of %d): %s",
                            display_url(url), partial.size, attempt, ATTEMPTS, exc)
    raise ModelPullError(
        f"The download from {display_url(url)} was interrupted {ATTEMPTS} times; {partial.size:,} bytes are kept. "
        "Run the same command again to resume.")


async def _attempt(session: aiohttp.ClientSession, url: str, partial: _PartialFile,
                   progress: ProgressCallback | None, max_bytes: int | None) -> Downloaded:
    offset = partial.size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        async with session.get(url, headers=headers) as response:
            _check_no_downgrade(url, response)
            total = _check_response(url, response, partial)
            if total is not None and max_bytes is not None and total > max_bytes:
                raise Oversized(f"{display_url(url)} is {total:,} bytes, but this model is {max_bytes:,}; "
                                "refusing it.")
            advertised = _advertised_sha256(response)
            if partial.size == total:  # 416 for a partial file that is already complete
                return Downloaded(partial.size, partial.hasher.hexdigest(), advertised)
            if total is not None:
                _check_free_space(partial, total - partial.size)
            last_report = 0.0
            next_disk_check = partial.size
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                if partial.size < len(GGUF_MAGIC):
                    _check_gguf_start(url, partial, chunk)
                if max_bytes is not None and partial.size + len(chunk) > max_bytes:
                    raise Oversized(f"{display_url(url)} sent more than the {max_bytes:,} bytes this model is; "
                                    "refusing it.")
                if partial.size >= next_disk_check:
                    _check_disk_reserve(partial, url)
                    next_disk_check = partial.size + DISK_CHECK_EVERY_BYTES
                partial.append(chunk)
                now = time.monotonic()
                if progress is not None and now - last_report >= 0.1:
                    last_report = now
                    progress(partial.size, total)
    except aiohttp.ClientSSLError as exc:
        raise ModelPullError(
            f"The secure connection to {urlsplit(url).hostname} failed ({exc}). Check the system's CA "
            "certificates, or download the file another way and pull it from disk.") from None
    except aiohttp.ClientConnectorError as exc:
        reason = getattr(exc.os_error, "strerror", None) or str(exc)
        raise ModelPullError(f"Cannot reach {urlsplit(url).hostname}: {reason}. {OFFLINE_HINT}") from None
    except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise _Interrupted(str(exc) or type(exc).__name__) from None
    except aiohttp.InvalidURL:
        raise ModelPullError(f"{display_url(url)} is not a valid URL.") from None
    except aiohttp.TooManyRedirects:
        raise ModelPullError(f"{display_url(url)} redirects in a loop; check the URL.") from None
    except aiohttp.ClientError as exc:
        raise ModelPullError(f"Downloading {display_url(url)} failed: {exc}.") from None
    if total is not None and partial.size != total:
        raise _Interrupted(f"the connection closed after {partial.size} of {total} bytes")
    if progress is not None:
        progress(partial.size, total)
    return Downloaded(partial.size, partial.hasher.hexdigest(), advertised)


def _check_response(url: str, response: aiohttp.ClientResponse, partial: _PartialFile) -> int | None:
    """Line the partial file up with what the server sends; return the full file size if known."""
    offset = partial.size
    if response.status == 416:
        # Range not satisfiable: either the file is complete already or it shrank on the server.
        total = _content_range(response.headers.get("Content-Range"))[2]
        if offset and total == offset:
            return total
        partial.restart()
        raise _Interrupted("the server refused to resume; starting over")
    if response.status >= 400:
        raise _http_error(url, response.status)
    if response.status == 206:
        start, _end, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            partial.restart()
            raise _Interrupted(f"the server resumed at byte {start}, not {offset}; starting over")
        return total
    if offset:
        log.info("%s does not support resuming; downloading from the start", urlsplit(url).hostname)
        partial.restart()
    return response.content_length


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (int(start) if start else None, int(end) if end else None,
            int(total) if total and total != "*" else None)


def _http_error(url: str, status: int) -> ModelPullError:
    shown = display_url(url)
    if status == 404:
        return ModelPullError(f"{shown} was not found (HTTP 404). Check the repository, file name and revision; "
                              "for Hugging Face use hf:ORG/REPO/FILE.gguf.")
    if status in (401, 403):
        return ModelPullError(f"{shown} needs permission (HTTP {status}); gated or private models are not "
                              "supported. Download it in a browser, then run `localllm pull /path/to/model.gguf`.")
    if status == 429 or status >= 500:
        return ModelPullError(f"{shown} is unavailable right now (HTTP {status}). Try again later.")
    return ModelPullError(f"{shown} answered HTTP {status}; check the URL.")


def _advertised_sha256(response: aiohttp.ClientResponse) -> str | None:
    # Hugging Face puts the LFS object's sha256 on the redirect it answers /resolve/ with.
    for hop in (*response.history, response):
        value = hop.headers.get("X-Linked-Etag", "").strip().strip('"').lower()
        if _SHA256_HEX.fullmatch(value):
            return value
    return None


def _check_gguf_start(url: str, partial: _PartialFile, chunk: bytes) -> None:
    head = (partial.head()[: partial.size] + chunk)[: len(GGUF_MAGIC)]
    if not GGUF_MAGIC.startswith(head):
        raise NotGGUF(
            f"{display_url(url)} is not a GGUF model file (it starts with {head!r}); it may be a web page. "
            "Link to the file itself: for Hugging Face use hf:ORG/REPO/FILE.gguf or a /resolve/ URL.")


def _check_no_downgrade(url: str, response: aiohttp.ClientResponse) -> None:
    """An https download must stay https through every redirect (nothing is written from a hop that
    was not)."""
    if urlsplit(url).scheme != "https":
        return  # the user asked for plain http (a local mirror)
    for hop in (*response.history, response):
        if hop.url.scheme != "https":
            raise ModelPullError(f"{display_url(url)} redirected to {hop.url.scheme}://{hop.url.host}: refusing to "
                                 "download a model over an unencrypted connection.")


def _check_disk_reserve(partial: _PartialFile, url: str) -> None:
    if shutil.disk_usage(partial.path.parent).free < DISK_RESERVE_BYTES:
        raise Oversized(f"{display_url(url)} would fill the disk holding {partial.path.parent} (less than "
                        f"{DISK_RESERVE_BYTES // 2**20} MiB would stay free); the download was stopped and removed. "
                        "Free some space or set models_dir to a bigger disk.")


def _check_free_space(partial: _PartialFile, remaining: int) -> None:
    free = shutil.disk_usage(partial.path.parent).free
    if free < remaining:
        raise ModelPullError(
            f"Not enough disk space in {partial.path.parent}: the model needs {remaining / 1e9:.1f} GB more, "
            f"{free / 1e9:.1f} GB are free. Free some space or set models_dir to a bigger disk.")
