# One command each: `make demo` runs the main job on the bundled real pool, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist
PG_INITDB := /usr/lib/postgresql/15/bin/initdb
CHROMIUM := /usr/bin/chromium
# Debian packages (bookworm: postgresql-15, chromium, dataset-fashion-mnist). As root (a container,
# CI) plain apt-get; elsewhere `make test-setup APT="sudo apt-get"`.
APT ?= apt-get

.PHONY: setup test-setup demo test lint bench dev clean

$(BIN)/curate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/curate

$(FASHION_MNIST):
	$(APT) install -y dataset-fashion-mnist || ($(APT) update && $(APT) install -y dataset-fashion-mnist)

# Servers and tools the tests start for real: PostgreSQL (the production instance's storage)
# and headless Chromium (the report page test).
$(PG_INITDB):
	$(APT) install -y postgresql-15 || ($(APT) update && $(APT) install -y postgresql-15)

$(CHROMIUM):
	$(APT) install -y chromium || ($(APT) update && $(APT) install -y chromium)

setup: $(BIN)/curate $(FASHION_MNIST)

test-setup: setup $(PG_INITDB) $(CHROMIUM)

demo: setup
	$(BIN)/curate demo

test: test-setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_core.py

dev: setup
	mkdir -p $${DAGSTER_HOME:-$(CURDIR)/.curation/dagster}
	test -f $${DAGSTER_HOME:-$(CURDIR)/.curation/dagster}/dagster.yaml || cp deploy/dagster.local.yaml $${DAGSTER_HOME:-$(CURDIR)/.curation/dagster}/dagster.yaml
	MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.curation/dagster} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .curation
