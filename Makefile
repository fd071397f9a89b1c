# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench up doctor fuzz

$(BIN)/ticketing: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/ticketing

install: $(BIN)/ticketing

demo: install
	$(BIN)/ticketing demo

up: install
	$(BIN)/ticketing up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy shared services ticketing

bench: install
	$(BIN)/python -m bench.flash_sale

# Each dependency's handshake, the broker's open-file limit, descriptors and queue counts (issue 13).
doctor: install
	$(BIN)/ticketing doctor

# schemathesis against a running gateway of its own (every operation, admin token); docs/SECURITY.md.
fuzz: install
	FUZZ_ALL=1 FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(BIN)/pytest tests/e2e/test_fuzz.py -s -q
