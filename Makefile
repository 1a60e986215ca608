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
# `make run` installs what the daemon's default path needs and nothing more (no PyTorch,
# no test tools). `make test` adds the test tools and the optional PyTorch embedder
# (which the tests cover), PyTorch pinned to its CPU build first so that nothing
# later pulls the multi-GB CUDA one.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[torch,test]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run

run: install
	$(BIN)/localllm pull smollm2-135m-instruct
	$(BIN)/localllm ask "$(PROMPT)"

serve: install
	$(BIN)/localllm serve

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_daemon_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
