# Common paths. `make help` lists them.
PYTHON ?= python3
# Pins torch to the CPU build; GPU users who installed their own torch: `make install CONSTRAINTS=`
CONSTRAINTS ?= constraints.txt
ARGS ?=
# The mission's headline experiment, and the directory `make train` writes (rerun: resumes).
EXPERIMENT ?= strategy=latent scenario=15p1
RUN_DIR ?= outputs/train/$(subst $(space),_,$(subst =,-,$(EXPERIMENT)))
# Sweeps: the grid (a conf/sweep/ preset or comma lists) and where its runs go.
SWEEP ?= sweep=strategies
# Named after the grid, so rerunning the same sweep resumes it: finished jobs exit at once.
SWEEP_DIR ?= outputs/multirun/$(subst $(comma),+,$(subst =,-,$(subst $(space),_,$(SWEEP))))
empty :=
space := $(empty) $(empty)
comma := ,
PYTEST_ARGS ?=
# `make test` runs on one pytest-xdist worker per core (tests/workers.py); TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
# The mission's headline experiment, and the directory `make train` writes (rerun: resumes).
EXPERIMENT ?= strategy=latent scenario=15p1
RUN_DIR ?= outputs/train/$(subst $(space),_,$(subst =,-,$(EXPERIMENT)))

STAMP := .make/installed

.PHONY: help install train export plan sweep-local sweep-slurm report sync-wandb test test-quick lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev,export]"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)  ## install clod and its dependencies (CPU torch) into $(PYTHON)

train: $(STAMP)  ## Latent Distillation on 15p1 of the embedded benchmark, then its table and figures (EXPERIMENT=..., ARGS=...)
	$(PYTHON) -m clod.train $(EXPERIMENT) hydra.run.dir=$(RUN_DIR) $(ARGS)
	$(PYTHON) -m clod.report $(RUN_DIR)
	@echo "results: $(RUN_DIR)/results.csv, $(RUN_DIR)/summary.json; figures: $(RUN_DIR)/report/*.png"

export: $(STAMP)  ## ONNX fp32 and int8 of a run's last task, scored and timed against PyTorch (RUN_DIR=..., ARGS="postprocess=graph")
	$(PYTHON) -m clod.export run=$(RUN_DIR) $(ARGS)
	@echo "models and report: $(RUN_DIR)/export/ (export.json, export.md)"

plan: $(STAMP)  ## print the task plan of an experiment without training (ARGS="scenario=15p1")
	$(PYTHON) -m clod.train dry_run=true $(ARGS)

sweep-local: $(STAMP)  ## a sweep on this machine, one job after another (SWEEP="strategy=lwf,sid strategy.alpha=1,3")
	$(PYTHON) -m clod.train -m $(SWEEP) hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)

sweep-slurm: $(STAMP)  ## the same sweep as a SLURM job array through submitit (HARDWARE=slurm_ddp for DDP jobs)
	$(PYTHON) -m clod.train -m $(SWEEP) hardware=$(or $(HARDWARE),slurm) hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)

report: $(STAMP)  ## table and plots of a sweep directory (SWEEP_DIR=...; REPORT_ARGS=--wandb)
	$(PYTHON) -m clod.report $(SWEEP_DIR) $(REPORT_ARGS)

sync-wandb: $(STAMP)  ## upload the offline W&B runs under a directory (SWEEP_DIR=..., default outputs/)
	@runs=$$(find $(or $(wildcard $(SWEEP_DIR)),outputs) -type d -name 'offline-run-*' 2>/dev/null); \
	if [ -z "$$runs" ]; then echo "no offline W&B runs under $(or $(wildcard $(SWEEP_DIR)),outputs)"; \
	else $(PYTHON) -m wandb sync $$runs; fi

test: $(STAMP)  ## the full test suite, as CI runs it (TEST_WORKERS=auto: one worker per core)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-quick: $(STAMP)  ## the tests not marked slow
	$(PYTHON) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:  ## remove caches (not outputs/ or data/)
	rm -rf .make .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
