"""The models directory: which GGUF files are there, finding one by name, removing one.

Every path handed out here is a plain file directly inside the models dir. Names
come from users, URLs and HTTP servers, so they pass through
``safe_model_filename`` first, and the joined path is checked again after
``Path.resolve`` so that no name can point anywhere else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from localllm.daemon.models.catalog import catalog_entry, entry_for_filename
from localllm.errors import ModelNotFound, UnsafeModelName
from localllm.file_digest import sha256_of_file
from localllm.paths import ensure_private_dir

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".gguf"
PARTIAL_SUFFIX = ".partial"  # an interrupted download, resumed by the next pull
# ext4, APFS and NTFS allow 255 bytes per name; leave room for PARTIAL_SUFFIX.
MAX_NAME_BYTES = 240

# Characters that look like a path separator but are not one to the OS. A name
# holding one would read like a path in a listing, so it is refused outright.
# (NFKC already folds the fullwidth and small forms into "/" and "\".)
_SEPARATOR_LOOKALIKES = frozenset("\u2044\u2215\u2216\u29f5\u29f8\u29f9\u2571\u2572\u27cb\u27cd\u1735\u20e5")
# Refused by Windows; refusing them everywhere keeps a models dir portable.
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)])


def _unsafe(name: str, why: str) -> UnsafeModelName:
    return UnsafeModelName(
        f"Unsafe model file name {name!r}: {why}. Use a plain file name such as 'my-model.Q4_K_M.gguf' "
        "(letters, digits, '-', '_', '.'), e.g. with `localllm pull SOURCE --name my-model.gguf`.")


def safe_model_filename(name: str) -> str:
    """``name`` checked and normalised into a file name that can only live in the models dir.

    Refuses rather than repairs: a name with a directory part, a control
    character or a look-alike slash is more likely a mistake or an attack than
    a name someone meant, and silently rewriting it could make `rm` delete a
    different file than the one asked for. Callers that derive a name from a URL
    or a path take its last component first.
    """
    if not isinstance(name, str):
        raise _unsafe(repr(name), "not a string")
    normalised = unicodedata.normalize("NFKC", name).strip()
    if not normalised:
        raise _unsafe(name, "the name is empty")
    for char in normalised:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            # Control, format (bidi overrides, zero-width), surrogate, private and unassigned.
            raise _unsafe(name, f"it contains the invisible or control character U+{ord(char):04X}")
        if char in "/\\":
            raise _unsafe(name, "path separators are not allowed (the file always goes in the models dir)")
        if char in _SEPARATOR_LOOKALIKES:
            looks = unicodedata.name(char, "?")
            raise _unsafe(name, f"it contains U+{ord(char):04X} ({looks}), which looks like a slash")
        if char in _WINDOWS_FORBIDDEN:
            raise _unsafe(name, f"the character {char!r} is not allowed in file names")
    if normalised in (".", ".."):
        raise _unsafe(name, "it names a directory")
    if normalised.startswith("."):
        raise _unsafe(name, "it starts with a dot (a hidden file)")
    if normalised.lower().endswith(MODEL_SUFFIX):
        normalised = normalised[: -len(MODEL_SUFFIX)] + MODEL_SUFFIX
    else:
        raise _unsafe(name, f"GGUF model files must end with {MODEL_SUFFIX}")
    stem = normalised[: -len(MODEL_SUFFIX)].rstrip(". ")
    if not stem:
        raise _unsafe(name, "the name has nothing before .gguf")
    if stem.split(".")[0].lower() in _WINDOWS_DEVICE_NAMES:
        raise _unsafe(name, "it is a reserved device name on Windows")
    if len(normalised.encode("utf-8")) > MAX_NAME_BYTES:
        raise _unsafe(name[:40] + "...", f"it is longer than {MAX_NAME_BYTES} bytes")
    return normalised


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name, e.g. "SmolLM2-135M-Instruct.Q4_1.gguf"
    path: Path
    size_bytes: int
    catalog_name: str | None  # the catalog entry stored under this file name, if any

    @cached_property
    def sha256(self) -> str:
        """Hash of the file; reads all of it, so only computed when asked for."""
        return sha256_of_file(self.path)


class ModelFiles:
    """The GGUF files in one models directory."""

    def __init__(self, models_dir: Path):
        self.models_dir = Path(models_dir).expanduser()

    def ensure_dir(self) -> Path:
        """Create the models dir (private to this user) and return it."""
        return ensure_private_dir(self.models_dir)

    def path_for(self, filename: str) -> Path:
        """Where the model file ``filename`` lives (whether or not it exists yet).

        Raises UnsafeModelName for any name that is not a plain file name or
        would end up outside the models dir.
        """
        safe = safe_model_filename(filename)
        root = self.models_dir.resolve()
        # The name is already free of separators and dots-only parts; this
        # double-checks the join itself. The candidate's own symlink is not
        # followed: a link a user placed in the models dir may point elsewhere
        # to be read, and writes replace the link itself (os.replace), never
        # its target.
        candidate = Path(os.path.normpath(root / safe))
        if candidate.parent != root or not candidate.is_relative_to(root):
            raise _unsafe(filename, "it resolves outside the models dir")
        return candidate

    def partial_path_for(self, filename: str, source: str) -> Path:
        """Where an interrupted download of ``filename`` from ``source`` is kept for the next pull to resume.

        The source's hash is part of the name, so bytes from one URL are never
        resumed with bytes from another that happens to give the same file name.
        """
        target = self.path_for(filename)
        key = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
        return target.with_name(f"{target.name}.{key}{PARTIAL_SUFFIX}")

    def partial_paths(self, filename: str) -> list[Path]:
        """Interrupted downloads of ``filename``, from any source."""
        target = self.path_for(filename)
        if not self.models_dir.is_dir():
            return []
        return sorted(path for path in target.parent.iterdir()
                      if path.name.startswith(target.name + ".") and path.name.endswith(PARTIAL_SUFFIX))

    def list(self) -> list[ModelFile]:
        if not self.models_dir.is_dir():
            return []
        found = []
        for path in sorted(self.models_dir.iterdir(), key=lambda p: p.name.lower()):
            if path.suffix != MODEL_SUFFIX or path.name.startswith(".") or not path.is_file():
                continue
            entry = entry_for_filename(path.name)
            found.append(ModelFile(name=path.name, path=path, size_bytes=path.stat().st_size,
                                   catalog_name=entry.name if entry else None))
        return found

    def resolve(self, name: str) -> Path:
        """The existing file for ``name``: a catalog name, or a file name with or without .gguf."""
        for filename in self._candidate_filenames(name):
            path = self.path_for(filename)
            if path.is_file():
                return path
        # A case-insensitive match helps on case-sensitive file systems, where
        # `smollm2-135m-instruct.q4_1` would otherwise miss the real file.
        wanted = {filename.lower() for filename in self._candidate_filenames(name)}
        for model in self.list():
            if model.name.lower() in wanted:
                return model.path
        raise ModelNotFound(
            f"Model {name!r} is not in {self.models_dir}: run `localllm pull {name}` "
            "(or `localllm models list` to see what is there).", param="model")

    def remove(self, name: str) -> Path:
        """Delete the model file for ``name`` and any interrupted download of it; return its path."""
        path = self.resolve(name)
        path.unlink()
        for partial in self.partial_paths(path.name):
            partial.unlink(missing_ok=True)
        log.info("removed model file %s", path)
        return path

    def _candidate_filenames(self, name: str) -> list[str]:
        stripped = name.strip()
        candidates = []
        entry = catalog_entry(stripped)
        if entry is not None:
            candidates.append(entry.filename)
        if stripped.lower().endswith(MODEL_SUFFIX):
            candidates.append(stripped)
        else:
            candidates.append(stripped + MODEL_SUFFIX)
        # Validate every candidate, so an unsafe name fails loudly instead of "not found".
        return [safe_model_filename(candidate) for candidate in candidates]
