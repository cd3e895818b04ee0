# Fresh-machine entry points. Both create .venv, install the package with the CPU build of torch
# pinned through constraints/cpu.txt, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints/cpu.txt

.PHONY: install install-dev demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) ".[cpu]"

install-dev: $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[cpu,dev]"

# Main job: fit LeaPRR on the bundled demo data, re-rank its test side, evaluate.
demo: install
	$(BIN)/rerank demo

test: install-dev
	$(BIN)/ruff check pillar_rerank cli benchmarks examples tests
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check pillar_rerank cli benchmarks examples tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
