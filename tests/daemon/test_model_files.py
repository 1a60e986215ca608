"""The models dir: name sanitising, listing, resolving and removing model files."""

from __future__ import annotations

import stat

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.daemon.models.catalog import CATALOG
from localllm.daemon.models.model_files import ModelFiles, safe_model_filename
from localllm.errors import ModelNotFound, UnsafeModelName
from localllm.file_digest import sha256_of_file

DEFAULT_FILENAME = CATALOG[DEFAULT_MODEL].filename


@pytest.mark.parametrize(("given", "expected"), [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("  padded.gguf  ", "padded.gguf"),
    ("shouting.GGUF", "shouting.gguf"),
    ("ｆｕｌｌｗｉｄｔｈ.gguf", "fullwidth.gguf"),  # NFKC folds compatibility forms
    ("with space and ünïcode.gguf", "with space and ünïcode.gguf"),
    ("a..b.gguf", "a..b.gguf"),  # ".." inside a name is not a path part
])
def test_plain_names_are_accepted_and_normalised(given, expected):
    assert safe_model_filename(given) == expected


UNSAFE_NAMES = [
    "../evil.gguf",
    "../../etc/evil.gguf",
    "..\\evil.gguf",
    "sub/dir.gguf",
    "C:\\models\\evil.gguf",
    "/etc/evil.gguf",
    "/absolute.gguf",
    "evil\uff0fslash.gguf",  # FULLWIDTH SOLIDUS, NFKC turns it into "/"
    "evil\uff3cslash.gguf",  # FULLWIDTH REVERSE SOLIDUS, NFKC turns it into "\"
    "evil\u2215slash.gguf",  # DIVISION SLASH, survives NFKC
    "evil\u2044slash.gguf",  # FRACTION SLASH
    "\u2025\uff0fevil.gguf",  # TWO DOT LEADER + FULLWIDTH SOLIDUS = "../"
    "evil\x00.gguf",
    "evil\n.gguf",
    "evil\u202egguf.exe.gguf",  # RIGHT-TO-LEFT OVERRIDE hides the real ending
    "zero\u200bwidth.gguf",
    ".hidden.gguf",
    ".gguf",
    "..",
    ".",
    "",
    "   ",
    "no-suffix",
    "model.bin",
    "model.gguf.exe",
    "con.gguf",
    "colon:stream.gguf",
    "x" * 300 + ".gguf",
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_with_a_fix(name):
    with pytest.raises(UnsafeModelName) as caught:
        safe_model_filename(name)
    assert "--name" in caught.value.message  # says how to fix it


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_no_unsafe_name_resolves_to_a_path(tmp_path, name):
    files = ModelFiles(tmp_path / "models")
    with pytest.raises(UnsafeModelName):
        files.path_for(name)


def test_resolve_never_reaches_outside_even_when_the_file_exists(tmp_path):
    files = ModelFiles(tmp_path / "models")
    files.ensure_dir()
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    with pytest.raises(UnsafeModelName):
        files.resolve("../outside.gguf")
    with pytest.raises(UnsafeModelName):
        files.remove("../outside")
    assert (tmp_path / "outside.gguf").exists()


def test_paths_are_direct_children_of_the_models_dir(tmp_path):
    files = ModelFiles(tmp_path / "a" / ".." / "models")
    path = files.path_for("ok.gguf")
    assert path.parent == (tmp_path / "models").resolve()
    partial = files.partial_path_for("ok.gguf", "https://example.test/ok.gguf")
    assert partial.parent == path.parent and partial.name.startswith("ok.gguf.") and partial.name.endswith(".partial")
    assert partial != files.partial_path_for("ok.gguf", "https://other.test/ok.gguf")


def test_ensure_dir_is_private(tmp_path):
    folder = ModelFiles(tmp_path / "models").ensure_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_list_shows_only_model_files(tmp_path):
    files = ModelFiles(tmp_path / "models")
    assert files.list() == []  # a missing dir is an empty one
    folder = files.ensure_dir()
    (folder / "b-model.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    (folder / DEFAULT_FILENAME).write_bytes(b"GGUF")
    (folder / "a-model.gguf.0123456789ab.partial").write_bytes(b"GGUF")
    (folder / ".a-model.gguf.xyz.tmp").write_bytes(b"GGUF")
    (folder / "notes.txt").write_text("hi")
    (folder / "dir.gguf").mkdir()

    listed = files.list()

    assert [m.name for m in listed] == ["b-model.gguf", DEFAULT_FILENAME]
    assert listed[0].size_bytes == 14 and listed[0].catalog_name is None
    assert listed[1].catalog_name == DEFAULT_MODEL
    assert listed[0].sha256 == sha256_of_file(folder / "b-model.gguf")


def test_resolve_by_catalog_name_file_name_and_stem(tmp_path):
    files = ModelFiles(tmp_path / "models")
    folder = files.ensure_dir()
    (folder / DEFAULT_FILENAME).write_bytes(b"GGUF")
    (folder / "mine.gguf").write_bytes(b"GGUF")

    assert files.resolve(DEFAULT_MODEL) == folder.resolve() / DEFAULT_FILENAME
    assert files.resolve(DEFAULT_MODEL.upper()) == folder.resolve() / DEFAULT_FILENAME
    assert files.resolve("mine.gguf").name == "mine.gguf"
    assert files.resolve("mine").name == "mine.gguf"
    assert files.resolve("smollm2-135m-instruct.q4_1").name == DEFAULT_FILENAME  # case-insensitive


def test_resolve_missing_model_says_how_to_get_it(tmp_path):
    files = ModelFiles(tmp_path / "models")
    with pytest.raises(ModelNotFound) as caught:
        files.resolve("absent-model")
    assert "localllm pull absent-model" in caught.value.message
    assert str(tmp_path / "models") in caught.value.message


def test_remove_deletes_the_model_and_its_partial_downloads(tmp_path):
    files = ModelFiles(tmp_path / "models")
    folder = files.ensure_dir()
    (folder / "gone.gguf").write_bytes(b"GGUF")
    files.partial_path_for("gone.gguf", "https://example.test/x").write_bytes(b"GG")
    (folder / "kept.gguf").write_bytes(b"GGUF")

    removed = files.remove("gone")

    assert removed.name == "gone.gguf"
    assert sorted(p.name for p in folder.iterdir()) == ["kept.gguf"]
    with pytest.raises(ModelNotFound):
        files.remove("gone")


def test_remove_of_a_symlinked_model_keeps_its_target(tmp_path):
    # People link big models in from elsewhere; removing the link must not delete their file.
    files = ModelFiles(tmp_path / "models")
    folder = files.ensure_dir()
    elsewhere = tmp_path / "big-disk" / "linked.gguf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF")
    (folder / "linked.gguf").symlink_to(elsewhere)

    assert files.resolve("linked") == folder.resolve() / "linked.gguf"
    files.remove("linked")

    assert elsewhere.exists()
    assert not (folder / "linked.gguf").exists()
