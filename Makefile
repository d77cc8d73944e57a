# `make run`: set everything up and train the default model.  `make test`: set up and run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Machines without internet keep MNIST beside the project (../shared/data); use it when present.
ifneq ($(wildcard ../shared/data/mnist),)
export MNISTLAB_DATA ?= $(abspath ../shared/data)
endif

.PHONY: setup run test test-quick bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned first: an unpinned torch would pull the CUDA build (several GB).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[export,serve,tensorboard,tune,mlflow,dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/mnistlab train

# Every test, the slow end-to-end ones included (this is what CI runs).
test: setup
	$(BIN)/python -m pytest -m "slow or not slow"

# The quick suite (skips tests marked slow), for the edit-test loop.
test-quick: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
