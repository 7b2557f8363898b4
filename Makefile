# Two entry points: `make demo` and `make test`. Both create .venv and install pinned deps.
# `make test-py312` runs the suite on Python 3.12 with the newest releases (no constraints).
PYTHON ?= python3
PYTHON312 ?= python3.12
VENV ?= .venv
VENV312 ?= .venv312
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-py312 lint bench

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m experiments.demo $(ARGS)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist worksteal --durations=15 $(ARGS)

test-py312:
	@if $(PYTHON312) -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" 2>/dev/null; then \
	  test -x $(VENV312)/bin/python || $(PYTHON312) -m venv $(VENV312); \
	  $(VENV312)/bin/python -m pip install -q --upgrade pip; \
	  $(VENV312)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"; \
	  $(VENV312)/bin/python -m ruff check . && $(VENV312)/bin/python -m pytest -n 2 $(ARGS); \
	else \
	  echo "no Python 3.12 interpreter ($(PYTHON312)): skipping the Python 3.12 suite"; \
	fi

test-slow: install
	$(PY) -m pytest -n 2 -m slow $(ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[bench]"
	$(PY) -m benchmarks.step_time $(ARGS)
