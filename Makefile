# Quick start: `make run` (the service on embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; on a CUDA host install torch first (README), and this keeps it.
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

# The dashboard tests drive Debian's Chromium through Playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

test: lint $(CHROMIUM)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
