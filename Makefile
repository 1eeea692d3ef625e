# Quick start: `make run` (the service on embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned torch from whatever index pip is set to: from plain PyPI on Linux x86_64 that is the
# CUDA build (it runs on a CPU too); a CPU-only or other-CUDA build installed first (README) is kept.
TORCH := torch==2.13.0

.PHONY: install run migrate worker api test lint format clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/activate

install: $(BIN)/activate

migrate: install
	mkdir -p var
	$(BIN)/alembic upgrade head

# The API in the foreground and one worker beside it; Ctrl-C stops both. The development
# tenant's API key is printed and kept in var/dev-api-key.
run: migrate
	$(BIN)/tunery admin dev-key var/dev-api-key
	@trap 'kill 0' EXIT; \
	$(BIN)/celery -A worker.celery_app worker --loglevel INFO & \
	$(BIN)/uvicorn app.main:app --host 127.0.0.1 --port 8000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# What the tests run on, from Debian's packages where missing: Chromium for the dashboard tests
# (driven by Playwright, never a downloaded browser), the PostgreSQL and Redis servers of
# which each test run starts private instances (tests/servers.py; none need to be running), and
# espeak-ng, which synthesises the built-in spoken digits (trainer/spoken_digits.py).
APT_INSTALL = apt-get install -y -q $(1) || (apt-get update -q && apt-get install -y -q $(1))
CHROMIUM := /usr/bin/chromium
# Debian keeps the server under its major version; the second name stands for "not installed".
POSTGRES := $(firstword $(wildcard /usr/lib/postgresql/*/bin/postgres) /usr/lib/postgresql/bin/postgres)
REDIS := /usr/bin/redis-server
ESPEAK := /usr/bin/espeak-ng
$(CHROMIUM):
	$(call APT_INSTALL,chromium)
$(POSTGRES):
	$(call APT_INSTALL,postgresql)
$(REDIS):
	$(call APT_INSTALL,redis-server)
$(ESPEAK):
	$(call APT_INSTALL,espeak-ng)
# The service synthesises its built-in spoken digits with it (on first use), tests or not.
install: $(ESPEAK)

test: lint $(CHROMIUM) $(POSTGRES) $(REDIS) $(ESPEAK)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
