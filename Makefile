# ProX developer commands. `make` (or `make help`) lists them.
# Every target that needs Python packages builds or refreshes .venv itself: uv when it is on
# PATH, else uv installed into the venv by pip, else plain pip; always against the lock.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
STAMP  := $(VENV)/.prox-installed

export PROX_DATA_DIR ?= $(CURDIR)/var
# Two cores: keep BLAS/LightGBM from oversubscribing when tests run beside services.
export OMP_NUM_THREADS ?= 2

.PHONY: help venv demo test test-fast lint lint-imports lock benchmarks sandbox-up sandbox-down clean clean-data

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "ProX make targets:\n"} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Data directory: PROX_DATA_DIR=$(PROX_DATA_DIR)"

$(STAMP): $(LOCK) setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v uv >/dev/null 2>&1; then UV=uv; \
	 elif $(BIN)/python -m pip install -q uv >/dev/null 2>&1; then UV=$(BIN)/uv; \
	 else UV=; fi; \
	 if [ -n "$$UV" ]; then \
	   echo "installing with $$UV"; \
	   $$UV pip install -q --python $(BIN)/python -c $(LOCK) -e '.[dev]'; \
	 else \
	   echo "installing with pip (slower)"; \
	   $(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev]'; \
	 fi
	@touch $@

venv: $(STAMP) ## Create or refresh the virtualenv from the lock

demo: $(STAMP) ## Run the main job on embedded defaults (sandbox CRMs, SQLite, local lake)
	$(BIN)/prox demo

test: $(STAMP) ## Run the whole test suite (fails if no test ran)
	$(BIN)/python -m pytest -p no:cacheprovider

test-fast: $(STAMP) ## Run unit tests only
	$(BIN)/python -m pytest -p no:cacheprovider -m unit

lint: $(STAMP) ## Lint, check formatting (ruff) and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

lint-imports: $(STAMP) ## Check that imports follow the layers of docs/architecture.md
	$(BIN)/lint-imports

benchmarks: $(STAMP) ## Run every benchmark (heavy: minutes and several GB)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

lock: ## Re-resolve requirements/lock.txt from setup.cfg (needs network access to PyPI)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@command -v uv >/dev/null 2>&1 || $(BIN)/python -m pip install -q uv
	@PATH="$(BIN):$$PATH" uv pip compile setup.cfg --extra dev --python-version 3.11 --upgrade -o $(LOCK)

sandbox-up: $(STAMP) ## Start the CRM sandbox (HTTPS emulators of Salesforce and HubSpot) in the background
	$(BIN)/prox sandbox up

sandbox-down: $(STAMP) ## Stop the CRM sandbox
	$(BIN)/prox sandbox down

clean-data: ## Delete the local data directory (lake, MLflow store, Airflow home, sandbox)
	rm -rf "$(PROX_DATA_DIR)"

clean: ## Delete the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
