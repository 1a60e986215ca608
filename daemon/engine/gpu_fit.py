"""``n_gpu_layers = "auto"``: as many layers on the GPU as fit its free memory.

The GPUs llama.cpp was built for are asked through ggml's backend-device API (the libraries that
come with llama-cpp-python), so the answer is what llama.cpp itself will see: none on a CPU build.
The layers that fit: the GPU's free memory, less a reserve, less the KV cache of the offloaded layers
and the compute buffers, divided by one layer's share of the weights.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

from localllm.daemon.models.footprint import MiB, kv_cache_bytes
from localllm.daemon.models.gguf_info import GGUFInfo

log = logging.getLogger(__name__)

GPU_RESERVE = 512 * MiB  # the driver's context and other programs' share
GPU_COMPUTE_BUFFERS = 256 * MiB  # llama.cpp's compute buffers on the device, at the default batch
_DEVICE_TYPE_GPU = 1  # enum ggml_backend_dev_type: CPU = 0, GPU = 1, ACCEL = 2


@dataclass(frozen=True)
class GPUDevice:
    name: str
    free: int
    total: int


def gpu_devices() -> list[GPUDevice]:
    """The GPUs this llama.cpp build can offload to, with their free and total memory; [] on a CPU build."""
    return [GPUDevice(name, free, total) for name, kind, free, total in ggml_devices() if kind == _DEVICE_TYPE_GPU]


def ggml_devices() -> list[tuple[str, int, int, int]]:
    """Every device ggml registered: (name, type, free bytes, total bytes); the CPU is one of them.
    [] when ggml cannot be asked (another platform's library names, an older ggml without the calls)."""
    try:
        return _ask_ggml()
    except (OSError, AttributeError) as exc:
        log.info("cannot ask ggml for its devices (%s); assuming no GPU", exc)
        return []


def _ask_ggml() -> list[tuple[str, int, int, int]]:
    try:
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
        base = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    except ImportError as exc:
        raise OSError(str(exc)) from None
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    base.ggml_backend_dev_type.restype = ctypes.c_int
    base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_name.restype = ctypes.c_char_p
    base.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_memory.restype = None
    base.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                             ctypes.POINTER(ctypes.c_size_t)]
    llama_cpp.llama_backend_init()  # loads the backends, so the devices are registered
    devices = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        base.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append((base.ggml_backend_dev_name(device).decode(), base.ggml_backend_dev_type(device),
                        free.value, total.value))
    return devices


def layers_that_fit(info: GGUFInfo, free_bytes: int, *, n_ctx: int, n_parallel: int, kv_cache_type: str) -> int:
    """How many of the model's layers fit in ``free_bytes`` of GPU memory (its KV cache goes with them)."""
    if info.shape is None or info.shape.n_layer == 0:
        return 0
    n_layer = info.shape.n_layer
    per_layer = info.tensor_bytes / (n_layer + 1)  # the output layer is about one more
    per_layer += kv_cache_bytes(info, n_ctx, n_parallel, kv_cache_type) / n_layer
    room = free_bytes - GPU_RESERVE - GPU_COMPUTE_BUFFERS
    if room <= 0:
        return 0
    fits = int(room // per_layer)
    return -1 if fits > n_layer else fits  # -1: all of them, output layer included
