# One command each: `make demo` runs the main job on the bundled real pool, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test lint bench dev clean

$(BIN)/curate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/curate

$(FASHION_MNIST):
	apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)

setup: $(BIN)/curate $(FASHION_MNIST)

demo: setup
	$(BIN)/curate demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_core.py

dev: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.curation/dagster} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .curation
