# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean backtests lock

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "OCW needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: install
	$(BIN)/ocw demo $(ARGS)

# two workers (pytest-xdist): the integration tests mostly wait on servers and replays, so two
# at a time halve the wall time on a 2-core machine; PYTEST_WORKERS=0 runs them in one process
PYTEST_WORKERS ?= 2

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

backtests: install  ## regenerate docs/backtests.md from ../shared/data
	$(BIN)/python bench/backtests_doc.py $(ARGS)

lock: install  ## regenerate deploy/constraints.txt (the image's pins) from the venv
	$(BIN)/python deploy/lock.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
