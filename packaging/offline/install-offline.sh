#!/usr/bin/env bash
# Install localllm on a box with no network from a wheelhouse made by make-wheelhouse.sh:
#   packaging/offline/install-offline.sh WHEELHOUSE [VENV]       (default venv: /opt/localllm)
# then pull the default model from the same folder and check the install:
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=WHEELHOUSE VENV/bin/localllm pull smollm2-135m-instruct
#   VENV/bin/localllm ask "Hello"
set -euo pipefail
wheelhouse="$(cd "${1:?usage: install-offline.sh WHEELHOUSE [VENV]}" && pwd)"
venv="${2:-/opt/localllm}"
python="${PYTHON:-python3.11}"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-index --find-links "$wheelhouse" localllm
echo "installed: $("$venv/bin/localllm" --version)"
