# Imagegate. `make run` serves the product on its embedded default; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
WEB_CONCURRENCY ?= $(shell nproc 2>/dev/null || echo 2)
STAMP := $(VENV)/.installed

# What the suite runs against: the real PostgreSQL and Redis on this machine.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/imagegate
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install run serve test lint services migrate worker beat bench bench-gateway bench-faults clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet ".[dev]"
	touch $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py sync_prices
	$(BIN)/python manage.py seed_demo
	@echo "Serving Imagegate at http://127.0.0.1:$(PORT)  (dashboard: /dashboard/, API: /v1)"
	exec $(BIN)/uvicorn config.asgi:application --host 127.0.0.1 --port $(PORT) --no-access-log --lifespan off

# Production: the environment says everything (DATABASE_URL, REDIS_URL, DJANGO_SECRET_KEY, ...; README). No migrations,
# no demo data. Static files are collected first so every page works with DJANGO_DEBUG=off.
# Every worker process writes its metrics under PROMETHEUS_MULTIPROC_DIR and /metrics sums them (default: one
# directory per host and port under $TMPDIR or /tmp; emptied here before the workers start; config/observability/).
serve: install
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	mkdir -p "$$PROMETHEUS_MULTIPROC_DIR" && find "$$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
	exec $(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --workers $(WEB_CONCURRENCY) \
		--no-access-log --lifespan off --backlog 4096 --timeout-keep-alive 30

# (after the recipe: tests/servers.py and tests/test_deploy.py read the first `serve:` line as the rule)
serve: export PROMETHEUS_MULTIPROC_DIR ?= $(or $(TMPDIR),/tmp)/imagegate-metrics-$(HOST)-$(PORT)

services:
	@scripts/ensure_services.sh

# Debian's Chromium for the Playwright browser tests (Playwright cannot download its own browsers here).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: install lint services browser
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The house rules that run: ruff (pyproject.toml [tool.ruff]) and the import contracts (pyproject.toml
# [tool.importlinter]; docs/architecture.md says why each exists). `make test` runs this first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

worker: install
	$(BIN)/celery -A config worker --loglevel=INFO

beat: install
	$(BIN)/celery -A config beat --loglevel=INFO

bench: install services
	@for script in bench/capacity.py bench/billing_report.py bench/scale.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Imagegate against the direct upstream and the LiteLLM proxy, one run, targets alternated (bench/gateway.py).
bench-gateway: install services
	$(BIN)/python bench/gateway.py

# Kill a web worker and the Celery worker, restart Redis and PostgreSQL under load; count the books (bench/faults.py).
# It restarts this machine's Redis and PostgreSQL: run it alone.
bench-faults: install services
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
