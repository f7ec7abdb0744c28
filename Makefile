# The newcomer's entry point: `make` lists the targets.
PYTHON ?= python3
VENV ?= .venv
OLDEST_VENV ?= .venv-oldest
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
OLDEST_FASTAPI ?= 0.136.3
# The 0.137-0.142 family builds route handlers on every request (FASTAPI_NOTES.md): tested on its own.
FASTAPI_0141 ?= 0.141.1
FASTAPI_0141_VENV ?= .venv-fastapi-0141
# Extra pytest arguments for the test targets, e.g. PYTEST_ARGS=tests/test_fastapi_concurrency.py
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
PEERS_VENV ?= .venv-bench-peers
OLDEST_REDIS ?= 5.3.1

.PHONY: help install demo test test-oldest test-0141 quickstart check lint typecheck format bench faults soak conformance clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[redis,test,lint]'
	touch $@

install: $(BIN)/.installed ## Create .venv with the package, its extras and the dev tools

demo: $(BIN)/.installed ## Serve example_app on http://127.0.0.1:8000 with the memory backend
	@echo "Serving example_app on http://$(HOST):$(PORT)"
	@echo "  try:       curl -si 'http://$(HOST):$(PORT)/spaces/1/items?page=1' | grep -i x-cache   (twice: MISS, then HIT)"
	@echo "  dashboard: http://$(HOST):$(PORT)/admin/login   (token: change-me)"
	@echo "  admin API: curl -s -H 'X-Admin-Token: change-me' 'http://$(HOST):$(PORT)/api/cache/stats'"
	@echo "  API docs:  http://$(HOST):$(PORT)/docs"
	$(BIN)/python -m uvicorn example_app.main:app --host $(HOST) --port $(PORT)

test: $(BIN)/.installed ## Run the test suite (starts its own redis-server processes)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(OLDEST_VENV)/bin/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e '.[redis,test]' 'fastapi==$(OLDEST_FASTAPI)' 'redis==$(OLDEST_REDIS)'
	touch $@

quickstart: $(BIN)/.installed ## The README's install and quick start in a clean venv, exactly as written
	$(BIN)/python -m tests.check_quickstart

test-oldest: $(OLDEST_VENV)/bin/.installed ## Run the suite on the oldest supported FastAPI and redis-py
	$(OLDEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

$(FASTAPI_0141_VENV)/bin/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(FASTAPI_0141_VENV)
	$(FASTAPI_0141_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FASTAPI_0141_VENV)/bin/python -m pip install --quiet -e '.[redis,test]' 'fastapi==$(FASTAPI_0141)'
	touch $@

test-0141: $(FASTAPI_0141_VENV)/bin/.installed ## Run the suite on FastAPI 0.141.1 (the 0.137-0.142 family: handlers built per request)
	$(FASTAPI_0141_VENV)/bin/python -m pytest $(PYTEST_ARGS)

check: lint typecheck ## Lint and type-check

lint: $(BIN)/.installed ## ruff check and format check
	$(BIN)/ruff check intelligent_cache tests example_app bench
	$(BIN)/ruff format --check intelligent_cache tests example_app bench

format: $(BIN)/.installed ## Reformat the code with ruff
	$(BIN)/ruff format intelligent_cache tests example_app bench
	$(BIN)/ruff check --fix intelligent_cache tests example_app bench

typecheck: $(BIN)/.installed ## mypy --strict on the package
	$(BIN)/mypy

$(PEERS_VENV)/bin/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet 'fastapi-intelligent-cache==0.1.5' 'fastapi-cache2==0.2.2' 'cashews==7.4.1' \
		jinja2 uvicorn uvloop httptools redis
	touch $@

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet uvloop httptools
	touch $@

bench: $(BIN)/.bench-installed $(PEERS_VENV)/bin/.installed ## Benchmarks: in-process, memory, invalidation, HTTP vs peers
	BENCH_PEERS_PYTHON=$(PEERS_VENV)/bin/python $(BIN)/python -m bench

faults: $(BIN)/.bench-installed ## Fault run: example_app under load while Redis is killed, paused, filled
	$(BIN)/python -m bench.faults

soak: $(BIN)/.bench-installed ## 10-minute soak: RSS and memory-backend budget stay flat
	$(BIN)/python -m bench.soak

conformance: $(BIN)/.installed ## HTTP caching conformance (cache-tests suite) against example_app's proxy
	$(BIN)/python -m bench.conformance

clean: ## Remove virtualenvs, caches and build output
	rm -rf $(VENV) $(OLDEST_VENV) $(FASTAPI_0141_VENV) $(PEERS_VENV) .conformance build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
