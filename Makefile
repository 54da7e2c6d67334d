# The project's entry points. `make demo` and `make test` work on a fresh
# Debian machine: both install what they need first (idempotent, cached).

VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/crm-kpi

.PHONY: install stack-up stack-down demo test unit lint schemas

install:
	bash .ci/install.sh

stack-up: install
	$(CLI) stack up

stack-down:
	$(CLI) stack down

demo: stack-up
	$(CLI) demo

test: stack-up
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

schemas: install
	$(CLI) schemas
