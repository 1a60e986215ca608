"""GGUF header reading, on the real default model and on small synthetic files."""

from __future__ import annotations

import struct

import pytest
from gguf import GGUFReader
from gguf.constants import LlamaFileType

from localllm.daemon.models.gguf_info import InvalidGGUF, read_gguf_info
from localllm.errors import LocalLLMError
from tests.daemon.synthetic_gguf import write_tiny_gguf


def test_real_default_model(default_model_file):
    info = read_gguf_info(default_model_file)

    assert info.architecture == "llama"
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.has_chat_template is True
    assert "smollm2" in (info.name or "").lower()
    assert info.file_size == default_model_file.stat().st_size
    assert info.to_dict()["path"] == str(default_model_file)


@pytest.mark.slow
def test_agrees_with_the_gguf_packages_reader(default_model_file):
    # GGUFReader decodes everything (seconds); ours skips arrays. Both must see the same model.
    reader = GGUFReader(default_model_file)
    info = read_gguf_info(default_model_file)

    assert info.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert info.tensor_count == len(reader.tensors)
    assert info.architecture == reader.get_field("general.architecture").contents()
    assert info.context_length == reader.get_field("llama.context_length").contents()
    file_type = LlamaFileType(reader.get_field("general.file_type").contents())
    assert info.quantization == file_type.name.removeprefix("MOSTLY_")


def test_synthetic_file_metadata(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", arch="qwen2", context_length=4096, chat_template=False,
                           n_vocab=100, n_embd=16, name="tiny")
    info = read_gguf_info(path)

    assert info.architecture == "qwen2"
    assert info.context_length == 4096
    assert info.has_chat_template is False
    assert info.parameter_count == 100 * 16 + 16
    assert info.tensor_count == 2
    assert info.name == "tiny"
    assert info.quantization == "F32"  # no general.file_type: the matrices' type


def test_file_type_names_the_quantization(tmp_path):
    path = write_tiny_gguf(tmp_path / "q.gguf", file_type=int(LlamaFileType.MOSTLY_Q4_K_M))
    assert read_gguf_info(path).quantization == "Q4_K_M"


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "page.gguf"
    path.write_bytes(b"<!DOCTYPE html><html>" + b" " * 100)
    with pytest.raises(InvalidGGUF) as caught:
        read_gguf_info(path)
    assert isinstance(caught.value, LocalLLMError)
    assert "not a usable GGUF model file" in caught.value.message
    assert "GGUF magic" in caught.value.reason


@pytest.mark.parametrize("keep_bytes", [0, 3, 30, 200, 131_000])
def test_truncated_files_are_refused(tmp_path, keep_bytes):
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep_bytes])
    with pytest.raises(InvalidGGUF):
        read_gguf_info(cut)


def test_unsupported_version(tmp_path):
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0) + b"\0" * 16)
    with pytest.raises(InvalidGGUF, match="version 1"):
        read_gguf_info(path)


def test_impossible_counts(tmp_path):
    path = tmp_path / "huge.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + b"\0" * 16)
    with pytest.raises(InvalidGGUF, match="impossibly large"):
        read_gguf_info(path)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidGGUF, match="Cannot read"):
        read_gguf_info(tmp_path / "absent.gguf")
