# The two commands of the README: `make run` and `make test`. Both create or update the
# virtual environment in .venv first (only when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Set up, create the database, import lists/*.csv, create the example campaigns (the research
## day rehearsed a few minutes from now) and run the daemon (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/mailer init
	$(BIN)/mailer campaign create campaigns/actualites-car-t.toml
	$(BIN)/mailer campaign create campaigns/journee-recherche-2024.toml --demo
	@echo "Sent mail goes to the Maildir data/outbox/ (mutt -f data/outbox); the subscriber"
	@echo "pages are on http://127.0.0.1:8000/ ; the staff console on http://127.0.0.1:8000/admin/"
	@echo "(first: .venv/bin/mailer users add you@example.org --role admin); Ctrl-C stops."
	$(BIN)/mailer run

## Set up, then lint, type-check, check the layers (docs/architecture.md) and run the whole
## test suite.
test: $(STAMP)
	$(BIN)/ruff format --check mailer tests bench
	$(BIN)/ruff check mailer tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

## Benchmarks (figures printed, not asserted).
bench: $(STAMP)
	$(BIN)/python bench/list_import.py
	$(BIN)/python bench/render_message.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/schedule.py

## Reliability harness: real daemons, faults injected, SQLite and PostgreSQL; writes
## RELIABILITY.md (about 15 minutes; `--quick` for 2). Needs root for the disk-full scenario.
reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) data .mypy_cache .pytest_cache .ruff_cache .hypothesis
