# The two commands of the README's quick start, plus a few helpers.
#   make run    - set up, fetch the default model, answer a question with it
#   make test   - set up and run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= In one sentence, what is a local-first LLM daemon for?

.PHONY: run test install bench serve clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Need $(PYTHON) (Python 3.11+) and a C compiler; set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp here the first time (about 9 minutes on 2 cores);
# pip caches the built wheel, so later installs take seconds.
# PyTorch (for the optional sentence-transformers embedder, which the tests cover) is
# pinned to its CPU build first, so nothing later pulls the multi-GB CUDA one.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[torch,test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/localllm pull smollm2-135m-instruct
	$(BIN)/localllm ask "$(PROMPT)"

serve: install
	$(BIN)/localllm serve

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_daemon_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
