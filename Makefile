# Every target does its own setup: a fresh machine needs only Python 3.11+, and Go for FerretDB.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint ferretdb redis setup clean bench bench-quick

run: $(STAMP) ferretdb
	$(PY) run.py

test: $(STAMP) ferretdb redis lint
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m flake8 tornado_app handlers tests run.py

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

ferretdb:
	@if [ -n "$$MONGODB_URI" ] || [ -n "$$FERRETDB_BIN" ] || command -v ferretdb >/dev/null 2>&1; then \
		true; else bash scripts/install-ferretdb.sh; fi

redis:
	@bash scripts/install-redis.sh

clean:
	rm -rf $(VENV) .bin build *.egg-info
