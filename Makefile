# One command each: `make demo` runs the main job on the bundled real pool, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist
PG_INITDB := /usr/lib/postgresql/15/bin/initdb
CHROMIUM := /usr/bin/chromium

.PHONY: setup test-setup demo test lint bench dev clean

$(BIN)/curate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/curate

$(FASHION_MNIST):
	apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)

# Servers and tools the tests start for real: PostgreSQL (the production instance's storage)
# and headless Chromium (the report page test).
$(PG_INITDB):
	apt-get install -y postgresql-15 || (apt-get update && apt-get install -y postgresql-15)

$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

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
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.curation/dagster} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .curation
