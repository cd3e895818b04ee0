# Fresh-machine entry points. Both create .venv, install the package with the CPU build of torch
# pinned through constraints/cpu.txt, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints/cpu.txt
# PyPI's Linux torch wheel is the CUDA build (GBs of nvidia-* packages); PyTorch's CPU index has the
# +cpu build of the same version, which pip prefers (a local version sorts higher). The index is
# added only when it answers, so an offline machine with a local wheel store still installs.
# `make install TORCH_CPU_INDEX=` turns it off; point it at a mirror to use one.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_ARG = $(if $(TORCH_CPU_INDEX),$(shell $(PYTHON) -c "import urllib.request as u; \
	u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" >/dev/null 2>&1 && \
	echo --extra-index-url $(TORCH_CPU_INDEX)))

.PHONY: install install-dev demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) install --quiet $(TORCH_INDEX_ARG) -c $(CONSTRAINTS) ".[cpu]"

install-dev: $(BIN)/python
	$(PIP) install --quiet $(TORCH_INDEX_ARG) -c $(CONSTRAINTS) -e ".[cpu,dev]"

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
