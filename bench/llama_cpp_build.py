"""Build llama.cpp's `llama-server` and `llama-bench` for the engine benchmarks.

Built from the llama.cpp sources vendored inside the llama-cpp-python sdist of
the installed version, so the C++ baselines run the same llama.cpp that the
daemon's engine links against. The sdist comes from `pip download` (pip's HTTP
cache makes a second download free); the build goes into a cache directory,
never into the repository:

  ~/.cache/localllm-bench/llama.cpp-<version>/   ($LOCALLLM_BENCH_CACHE, or --cache-dir, replaces
      sdist/                                         ~/.cache/localllm-bench)
      src/llama_cpp_python-<version>/vendor/llama.cpp/
      build/bin/llama-server, build/bin/llama-bench
      build.log

A build that has both binaries is reused. Release, GGML_NATIVE=ON, static
libraries, no HTTPS (LLAMA_OPENSSL=OFF; LLAMA_CURL is deprecated in this
llama.cpp and ignored), no web UI download. About 15-20 minutes with -j2 on 2 cores.

    python bench/llama_cpp_build.py [--cache-dir DIR] [--jobs 2] [--rebuild]

prints the two binaries' paths.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "LOCALLLM_BENCH_CACHE"
TARGETS = ("llama-server", "llama-bench")
REPO_ROOT = Path(__file__).resolve().parent.parent
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_OPENSSL=OFF",  # the server only needs plain HTTP on localhost
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI from Hugging Face at build time
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
)


class BuildError(Exception):
    """A build step failed; the message says how to fix it."""


@dataclass(frozen=True)
class LlamaCppBinaries:
    version: str
    server: Path
    bench: Path


def llama_cpp_python_version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("llama-cpp-python is not installed: run `pip install -e '.[test]'`") from None


def cache_dir(version: str, override: Path | None = None) -> Path:
    """Where this version's sources and build live; refuses a place inside the repository."""
    if override is None:
        base = os.environ.get(CACHE_ENV)
        xdg_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        parent = Path(base) if base else xdg_cache / "localllm-bench"
        override = parent / f"llama.cpp-{version}"
    directory = override.expanduser().resolve()
    if directory.is_relative_to(REPO_ROOT):
        raise BuildError(f"{directory} is inside the repository; point --cache-dir or ${CACHE_ENV} elsewhere")
    return directory


def find_tools() -> tuple[str, str]:
    """cmake and a C++ compiler, or an error that says how to get them."""
    cmake = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if cmake is None:
        raise BuildError("cmake not found: install it (`pip install cmake` in this venv, or `apt-get install cmake`)")
    compiler = os.environ.get("CXX") or next(
        (found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)
    if compiler is None or shutil.which(compiler) is None:
        raise BuildError("no C++ compiler found: install one (`apt-get install build-essential`) or set $CXX")
    return cmake, compiler


def fetch_sources(version: str, directory: Path) -> Path:
    """The vendored llama.cpp tree from the llama-cpp-python sdist, downloaded and unpacked once."""
    source = directory / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    sdist_dir = directory / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        print(f"downloading the llama-cpp-python {version} sdist", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary", ":all:",
             "--no-deps", "-d", str(sdist_dir)],
            capture_output=True, text=True)
        if result.returncode != 0 or not sdist.exists():
            raise BuildError(f"could not download the llama-cpp-python {version} sdist (needs PyPI; or put "
                             f"{sdist.name} in {sdist_dir} by hand):\n{result.stderr[-2000:]}")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise BuildError(f"{sdist} holds no vendor/llama.cpp; delete it and run again")
        archive.extractall(directory / "src", members=members, filter="data")
    return source


def build(*, cache: Path | None = None, jobs: int = 2, rebuild: bool = False) -> LlamaCppBinaries:
    """Build (or reuse) llama-server and llama-bench; returns their paths."""
    version = llama_cpp_python_version()
    directory = cache_dir(version, cache)
    build_dir = directory / "build"
    binaries = LlamaCppBinaries(version, build_dir / "bin" / "llama-server", build_dir / "bin" / "llama-bench")
    if not rebuild and binaries.server.exists() and binaries.bench.exists():
        return binaries
    cmake, compiler = find_tools()
    directory.mkdir(parents=True, exist_ok=True)
    source = fetch_sources(version, directory)
    log_path = directory / "build.log"
    print(f"building {', '.join(TARGETS)} from llama.cpp in llama-cpp-python {version} with -j{jobs} "
          f"(15-20 minutes on 2 cores); log: {log_path}", file=sys.stderr)
    started = time.monotonic()
    with log_path.open("w") as log:
        for step in ([cmake, "-S", str(source), "-B", str(build_dir), f"-DCMAKE_CXX_COMPILER={compiler}",
                      *CMAKE_OPTIONS],
                     [cmake, "--build", str(build_dir), "--config", "Release", "-j", str(jobs),
                      "--target", *TARGETS]):
            log.write("$ " + " ".join(step) + "\n")
            log.flush()
            if subprocess.run(step, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
                raise BuildError(f"`{' '.join(step[:3])} ...` failed; full log in {log_path}:\n{tail}")
    if not (binaries.server.exists() and binaries.bench.exists()):
        raise BuildError(f"the build finished but {binaries.server} or {binaries.bench} is missing; see {log_path}")
    print(f"built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, help=f"build directory (default: ${CACHE_ENV} or "
                                                       "~/.cache/localllm-bench, plus llama.cpp-<version>)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true", help="build again even if the binaries exist")
    args = parser.parse_args()
    try:
        binaries = build(cache=args.cache_dir, jobs=args.jobs, rebuild=args.rebuild)
    except BuildError as error:
        raise SystemExit(f"error: {error}") from None
    print(binaries.server)
    print(binaries.bench)


if __name__ == "__main__":
    main()
