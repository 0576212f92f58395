# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make run    install into .venv, then run the main job on the embedded default
#   make test   install into .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,serve]'
	touch $@

run: setup
	$(BIN)/bayesian-hf quickstart

test: setup
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider tests

bench: setup
	$(BIN)/python benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) build *.egg-info
