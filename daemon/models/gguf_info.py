"""What a GGUF file holds, read from its header: architecture, size, quantization, context.

``gguf.GGUFReader`` turns every metadata value into numpy arrays, including
the tokenizer's vocabulary and merges (100k+ strings for a small model), which
takes seconds per file. Listing and checking models needs a handful of scalar
keys and the tensor shapes, so this module walks the header itself and steps
over arrays without decoding them. The layout and enums come from the `gguf`
package; tests check the results against ``GGUFReader`` on the real model.
"""

from __future__ import annotations

import logging
import mmap
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from localllm.errors import InvalidGGUF

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_MAX_DIMS = 8  # ggml uses 4; anything far above is a corrupt header

_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters that size a model's KV cache and buffers (from ``{architecture}.*`` keys)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int  # per head
    value_length: int
    n_vocab: int
    sliding_window: int | None  # tokens a sliding-window layer attends to (Gemma 3: 5 of every 6 layers)


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    file_size: int
    version: int
    architecture: str | None
    name: str | None  # general.name
    parameter_count: int  # sum of all tensors' element counts
    quantization: str | None  # e.g. "Q4_1", "Q4_K_M", "F16"
    context_length: int | None  # the context the model was trained for
    has_chat_template: bool
    tensor_count: int
    tensor_bytes: int = 0  # the weights' bytes (what loading maps into memory)
    shape: ModelShape | None = None  # None when the header lacks the hyperparameters
    chat_template: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        del data["chat_template"]  # long; has_chat_template says whether there is one
        return data


@dataclass(frozen=True)
class ArrayLength:
    """A metadata array, stepped over: only its length is kept (a vocabulary's size, say)."""

    count: int


def _invalid(path: Path, why: str) -> InvalidGGUF:
    return InvalidGGUF(
        f"{path} is not a usable GGUF model file ({why}). Delete it and pull it again, "
        "or convert the model to GGUF with llama.cpp's convert_hf_to_gguf.py.", reason=why)


class _HeaderCursor:
    """Reads little- or big-endian GGUF header values from a memory map, bounds-checked."""

    def __init__(self, data: mmap.mmap, endian: str):
        self.data = data
        self.endian = endian
        self.offset = 0

    def read(self, fmt: str) -> Any:
        fmt = self.endian + fmt
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise EOFError
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return value

    def read_string(self) -> str:
        raw = self._string_bytes()
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self._string_bytes(keep=False)

    def _string_bytes(self, keep: bool = True) -> bytes:
        length = self.read("Q")
        end = self.offset + length
        if end > len(self.data):
            raise EOFError
        raw = self.data[self.offset:end] if keep else b""
        self.offset = end
        return raw

    def read_value(self, value_type: int) -> Any:
        """A scalar or string value; arrays are stepped over and come back as their ArrayLength."""
        if value_type == GGUFValueType.STRING:
            return self.read_string()
        if value_type == GGUFValueType.ARRAY:
            return ArrayLength(self._skip_array())
        fmt = _SCALAR_FORMATS.get(value_type)
        if fmt is None:
            raise ValueError(f"unknown metadata value type {value_type}")
        return self.read(fmt)

    def _skip_array(self) -> int:
        item_type = self.read("I")
        count = self.read("Q")
        fmt = _SCALAR_FORMATS.get(item_type)
        if fmt is not None:
            end = self.offset + count * struct.calcsize(fmt)
            if end > len(self.data):
                raise EOFError
            self.offset = end
        elif item_type == GGUFValueType.STRING:
            for _ in range(count):
                self.skip_string()
        elif item_type == GGUFValueType.ARRAY:
            for _ in range(count):
                self._skip_array()
        else:
            raise ValueError(f"unknown array item type {item_type}")
        return count


@dataclass(frozen=True)
class _TensorInfo:
    shape: tuple[int, ...]
    type_id: int
    offset: int


def _endianness(data: mmap.mmap) -> tuple[str, int]:
    (version,) = struct.unpack_from("<I", data, 4)
    # A file written on a big-endian machine reads as 0x03000000 here.
    if version & 0xFFFF == 0:
        return ">", struct.unpack_from(">I", data, 4)[0]
    return "<", version


def _read_header(path: Path, data: mmap.mmap) -> tuple[int, dict[str, Any], list[_TensorInfo], int]:
    if data[:4] != GGUF_MAGIC:
        raise _invalid(path, f"it starts with {bytes(data[:4])!r}, not the GGUF magic")
    endian, version = _endianness(data)
    if version not in SUPPORTED_VERSIONS:
        raise _invalid(path, f"GGUF version {version} is not supported, only {SUPPORTED_VERSIONS}")
    cursor = _HeaderCursor(data, endian)
    cursor.offset = 8
    tensor_count = cursor.read("Q")
    kv_count = cursor.read("Q")
    # Each entry takes at least 8 bytes; larger counts can only come from a corrupt header.
    if tensor_count > len(data) // 8 or kv_count > len(data) // 8:
        raise _invalid(path, "the header counts are impossibly large")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.read_string()
        metadata[key] = cursor.read_value(cursor.read("I"))
    tensors = []
    for _ in range(tensor_count):
        cursor.skip_string()  # tensor name
        n_dims = cursor.read("I")
        if n_dims > _MAX_DIMS:
            raise _invalid(path, f"a tensor claims {n_dims} dimensions")
        shape = tuple(cursor.read("Q") for _ in range(n_dims))
        tensors.append(_TensorInfo(shape=shape, type_id=cursor.read("I"), offset=cursor.read("Q")))
    alignment = metadata.get("general.alignment") or GGUF_DEFAULT_ALIGNMENT
    data_start = -(-cursor.offset // alignment) * alignment
    return version, metadata, tensors, data_start


def _tensor_data_end(tensors: list[_TensorInfo], data_start: int) -> int | None:
    """Where the last tensor's bytes end, or None when a tensor type is unknown to this gguf version."""
    end = data_start
    for tensor in tensors:
        try:
            block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor.type_id)]
        except (ValueError, KeyError):
            return None
        end = max(end, data_start + tensor.offset + prod(tensor.shape) // block_size * type_size)
    return end


def _file_type_name(file_type: Any) -> str | None:
    try:
        from gguf.constants import LlamaFileType
    except ImportError:  # older gguf releases do not have the enum
        return None
    try:
        name = LlamaFileType(int(file_type)).name
    except (TypeError, ValueError):
        return None
    if name == "GUESSED":
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _dominant_tensor_type(tensors: list[_TensorInfo]) -> str | None:
    # Norms and biases stay F32 in every quantization; the matrices tell the story.
    counts = Counter(t.type_id for t in tensors if len(t.shape) >= 2) or Counter(t.type_id for t in tensors)
    if not counts:
        return None
    type_id = counts.most_common(1)[0][0]
    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type {type_id}"


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read the header of the GGUF file at ``path``; raises InvalidGGUF when it is not one."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise _invalid(path, f"it is only {size} bytes long")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                version, metadata, tensors, data_start = _read_header(path, data)
    except EOFError:
        raise _invalid(path, "the header is truncated") from None
    except (ValueError, struct.error) as exc:
        raise _invalid(path, f"corrupt header: {exc}") from None
    except OSError as exc:
        why = str(exc.strerror or exc)
        raise InvalidGGUF(f"Cannot read model file {path}: {why}.", reason=why) from None

    data_end = _tensor_data_end(tensors, data_start)
    if data_end is not None and data_end > size:
        raise _invalid(path, f"it is truncated: {size} bytes of {data_end}")

    architecture = metadata.get("general.architecture")
    context_length = metadata.get(f"{architecture}.context_length") if architecture else None
    template = metadata.get("tokenizer.chat_template")
    return GGUFInfo(
        path=path,
        file_size=size,
        version=version,
        architecture=architecture if isinstance(architecture, str) else None,
        name=metadata.get("general.name") if isinstance(metadata.get("general.name"), str) else None,
        parameter_count=sum(prod(t.shape) for t in tensors),
        quantization=_file_type_name(metadata.get("general.file_type")) or _dominant_tensor_type(tensors),
        context_length=int(context_length) if isinstance(context_length, int) else None,
        has_chat_template=isinstance(template, str) and bool(template.strip()),
        tensor_count=len(tensors),
        tensor_bytes=(data_end - data_start) if data_end is not None else size - data_start,
        shape=_shape(metadata, architecture) if isinstance(architecture, str) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def _shape(metadata: dict[str, Any], arch: str) -> ModelShape | None:
    def number(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    n_layer, n_embd, n_head = number("block_count"), number("embedding_length"), number("attention.head_count")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if n_layer is None or n_embd is None or n_head is None or not isinstance(tokens, ArrayLength):
        return None
    head_dim = n_embd // n_head
    return ModelShape(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                      n_head_kv=number("attention.head_count_kv") or n_head,  # per-layer arrays: the widest case
                      key_length=number("attention.key_length") or head_dim,
                      value_length=number("attention.value_length") or head_dim,
                      n_vocab=tokens.count, sliding_window=number("attention.sliding_window"))

