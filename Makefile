# Every target sets itself up: a fresh machine needs only python3 (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The PostgreSQL server `make demo-workers` uses (it creates its own database there).
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres

.PHONY: install demo demo-workers test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat  # a path in a .pth, as fast to import as an install
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tracker.testing.demo

demo-workers: $(STAMP)
	$(BIN)/python -m tracker.testing.demo --db '$(PG_URL)' --workers 3

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every benchmark in bench/, then one table of results (bench-run/results.md); PostgreSQL
# figures too when a server answers at TRACKER_BENCH_PG_URL (default: the same as PG_URL).
bench: $(STAMP)
	$(BIN)/python bench/all.py

.PHONY: bench-quick
bench-quick: $(STAMP)
	$(BIN)/python bench/all.py --quick

clean:
	rm -rf $(VENV) demo-run bench-run .pytest_cache .ruff_cache
