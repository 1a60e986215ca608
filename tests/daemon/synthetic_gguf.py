"""Small, valid GGUF files for tests that need a model file but not a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter

TINY_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def write_tiny_gguf(path: Path, *, arch: str = "llama", context_length: int = 256, chat_template: bool = True,
                    n_vocab: int = 512, n_embd: int = 64, file_type: int | None = None,
                    name: str = "tiny-test", seed: int = 0) -> Path:
    """Write a GGUF with real metadata and two F32 tensors (n_vocab*n_embd + n_embd parameters)."""
    writer = GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_context_length(context_length)
    if chat_template:
        writer.add_chat_template(TINY_TEMPLATE)
    if file_type is not None:
        writer.add_file_type(file_type)
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_gguf_bytes(tmp_dir: Path, **options) -> bytes:
    return write_tiny_gguf(tmp_dir / "tiny-source.gguf", **options).read_bytes()
