# Two commands start a new user: `make sweep` (set up, then run the main study) and `make test`.
# Everything lands in ./.venv; nothing is installed system-wide except, for the tests, a
# throwaway PostgreSQL server on loopback when one can be had (scripts/test.sh).
PYTHON ?= python3
VENV   ?= .venv
STUDY  ?= experiments/quickstart.yaml
# CPU threads per trial for `make sweep`: on a machine other jobs share, one thread per trial
# runs several times faster than two (README). Given on the command line, not in the study
# file, because the file also serves GPU and many-core hosts; the committed results ran with 1.
THREADS ?= 1
# Processes sharing the study: with one thread each, one per core keeps both cores busy.
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
DASHBOARD_PORT ?= 8080

.PHONY: setup sweep test test-fast lint clean dashboard lab

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

sweep: setup
	$(VENV)/bin/mvlab sweep $(STUDY) --workers $(WORKERS) --set train.threads=$(THREADS)

# optuna-dashboard on the study's Optuna storage (the journal file by default): live Pareto
# front, history and trials at http://127.0.0.1:$(DASHBOARD_PORT) while `make sweep` runs.
dashboard: setup
	$(VENV)/bin/mvlab dashboard $(STUDY) --port $(DASHBOARD_PORT)

# JupyterLab from the venv on the analysis notebooks (its kernel is the venv's Python).
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

test: setup
	bash scripts/test.sh

# The fast lane while editing: every test not marked slow (no sweeps that train, no DDP or
# multi-process runs, no UI). Every PostgreSQL and browser test is marked slow, so this runs
# pytest directly, without scripts/test.sh's throwaway server. CI (`make test`) runs them all.
test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check mvlab tests

clean:
	rm -rf $(VENV) studies .pytest_cache
