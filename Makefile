# Two commands start a new user: `make sweep` (set up, then run the main study) and `make test`.
# Everything lands in ./.venv; nothing is installed system-wide except, for the tests, a
# throwaway PostgreSQL server on loopback when one can be had (scripts/test.sh).
PYTHON ?= python3
VENV   ?= .venv
STUDY  ?= experiments/hybrid_patterns.yaml

.PHONY: setup sweep test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

sweep: setup
	$(VENV)/bin/mvlab sweep $(STUDY)

test: setup
	bash scripts/test.sh

lint: setup
	$(VENV)/bin/ruff check mvlab tests

clean:
	rm -rf $(VENV) studies .pytest_cache
