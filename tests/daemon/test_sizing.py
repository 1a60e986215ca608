"""Sizing models to the box: the footprint estimate against a real load, slots for n_parallel = auto,
layers for n_gpu_layers = auto (through ggml's own device list), and keep-alive durations."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from localllm.config import Settings
from localllm.config.engine import duration_seconds
from localllm.daemon.engine.gpu_fit import GPU_COMPUTE_BUFFERS, GPU_RESERVE, ggml_devices, gpu_devices, layers_that_fit
from localllm.daemon.engine.sizing import auto_parallel, footprint_for, sized
from localllm.daemon.models.footprint import MiB, estimate_footprint, kv_cache_bytes
from localllm.daemon.models.gguf_info import read_gguf_info


def engine(**values):
    return Settings.model_validate({"engine": {"n_threads": 2, **values}}).engine


def test_kv_cache_follows_the_models_shape(default_model_file, gemma_model_file):
    smollm, gemma = read_gguf_info(default_model_file), read_gguf_info(gemma_model_file)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64; Gemma 3 270M: 18 layers, 1 KV head of 256.
    assert kv_cache_bytes(smollm, 2048, 4, "q8_0") == int(30 * 3 * (64 + 64) * 34 / 32 * 2048 * 4)
    assert kv_cache_bytes(gemma, 2048, 1, "f16") == 18 * 1 * (256 + 256) * 2 * 2048
    assert kv_cache_bytes(gemma, 1000, 1, "q8_0") == kv_cache_bytes(gemma, 1024, 1, "q8_0")  # padded to 256
    assert kv_cache_bytes(smollm, 2048, 4, "f16-q8_0") == int(30 * 3 * 64 * (2 + 34 / 32) * 2048 * 4)


def test_the_estimate_is_within_15_percent_of_a_real_load(default_model_file):
    probe = """
import asyncio, json, sys, psutil
from pathlib import Path
from localllm.config import Settings
from localllm.daemon.engine.model_registry import registry_for
from localllm.daemon.engine.llama_engine import GenerationJob
from localllm.vocabulary import Sampling, AnswerText

async def main():
    process = psutil.Process()
    settings = Settings.model_validate({"engine": {"n_ctx": 2048, "n_parallel": 3, "n_threads": 2}})
    before = process.memory_info().rss
    registry = registry_for(settings, ["m"], [Path(sys.argv[1])])
    registry.start_all()
    await registry.default.wait_ready()
    tokens = await registry.default.render_and_tokenize([{"role": "user", "content": "Tell me a story."}])
    await asyncio.gather(*(AnswerText.read(registry.default.stream(GenerationJob(tokens, 16, Sampling())))
                           for _ in range(3)))
    print(json.dumps({"rss": process.memory_info().rss - before}))
    await registry.stop_all()

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", probe, str(default_model_file)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])["rss"]
    estimate = estimate_footprint(read_gguf_info(default_model_file), n_ctx=2048, n_parallel=3,
                                  kv_cache_type="q8_0").total
    assert abs(estimate / measured - 1) < 0.15, (estimate / MiB, measured / MiB)


def test_auto_slots_follow_the_cores_and_give_way_to_the_budget(gemma_model_file):
    info = read_gguf_info(gemma_model_file)
    assert auto_parallel(info, engine(), 16 * 1024 * MiB) == 8  # 4 per core, 2 cores
    assert auto_parallel(info, engine(n_threads=8), 16 * 1024 * MiB) == 16  # at most 16
    assert auto_parallel(info, engine(n_threads=1), 16 * 1024 * MiB) == 4  # at least 4
    tight = auto_parallel(info, engine(), 800 * MiB)
    assert 1 <= tight < 8 and footprint_for(info, engine(), tight).total <= 400 * MiB
    resolved = sized(engine(n_batch=4), info, 16 * 1024 * MiB)
    assert (resolved.n_parallel, resolved.n_batch) == (8, 8)  # the batch holds one token per sequence
    assert sized(engine(n_parallel=3), info, 16 * 1024 * MiB).n_parallel == 3


def test_gpu_layers_auto_asks_ggml_and_is_zero_on_a_cpu_build(gemma_model_file):
    import llama_cpp

    devices = ggml_devices()
    assert any(kind == 0 and total > 0 for _, kind, _, total in devices)  # the CPU, with its memory
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("a GPU build: the CPU-build answer does not apply (the device check covers GPUs)")
    assert gpu_devices() == []
    assert sized(engine(n_gpu_layers="auto"), read_gguf_info(gemma_model_file), 1 << 34).gpu_layers == 0


def test_layers_that_fit_a_gpu(gemma_model_file):
    info = read_gguf_info(gemma_model_file)
    fit = [layers_that_fit(info, free, n_ctx=2048, n_parallel=4, kv_cache_type="q8_0")
           for free in (0, GPU_RESERVE + GPU_COMPUTE_BUFFERS, GPU_RESERVE + GPU_COMPUTE_BUFFERS + 100 * MiB,
                        GPU_RESERVE + GPU_COMPUTE_BUFFERS + 200 * MiB, 64 << 30)]
    assert fit[0] == fit[1] == 0 and 0 < fit[2] < fit[3] < 18 and fit[4] == -1  # -1: all of them


@pytest.mark.parametrize(("value", "seconds"), [("5m", 300.0), ("1h30m", 5400.0), ("300s", 300.0), (300, 300.0),
                                                ("1.5s", 1.5), ("500ms", 0.5), (0, 0.0), (-1, math.inf),
                                                ("-1", math.inf)])
def test_keep_alive_durations_as_ollama_reads_them(value, seconds):
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "5 m", True, None, "m5"])
def test_keep_alive_that_is_no_duration_is_refused(value):
    with pytest.raises(ValueError, match="keep_alive"):
        duration_seconds(value)
