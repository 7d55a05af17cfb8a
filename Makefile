# Common paths. `make help` lists them.
PYTHON ?= python3
# Pins torch to the CPU build; GPU users who installed their own torch: `make install CONSTRAINTS=`
CONSTRAINTS ?= constraints.txt
ARGS ?=
PYTEST_ARGS ?=

STAMP := .make/installed

.PHONY: help install train plan test test-quick lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)  ## install clod and its dependencies (CPU torch) into $(PYTHON)

train: $(STAMP)  ## run the default experiment on the embedded benchmark (extra overrides: ARGS="...")
	$(PYTHON) -m clod.train $(ARGS)

plan: $(STAMP)  ## print the task plan of an experiment without training (ARGS="scenario=15p1")
	$(PYTHON) -m clod.train dry_run=true $(ARGS)

test: $(STAMP)  ## the full test suite, as CI runs it
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-quick: $(STAMP)  ## the tests not marked slow
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:  ## remove caches (not outputs/ or data/)
	rm -rf .make .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
