# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench up doctor fuzz soak faults chromium

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

test: install chromium
	$(BIN)/pytest

# The console's browser test (tests/e2e/test_console.py) drives Debian's chromium through Playwright (Playwright's
# own browser download cannot work here, so `playwright install` is never run). Installed when missing, as root.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make: /usr/bin/chromium is missing and installing it needs root: sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; \
	fi

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy shared services ticketing bench tests

bench: install
	$(BIN)/python -m bench.flash_sale

# Each dependency's handshake, the broker's open-file limit, descriptors and queue counts (issue 13).
doctor: install
	$(BIN)/ticketing doctor

# schemathesis against a running gateway of its own (every operation, admin token); docs/SECURITY.md.
fuzz: install
	FUZZ_ALL=1 FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(BIN)/pytest tests/e2e/test_fuzz.py -s -q

# Issue 13: cycle the whole system (start, traffic, graceful stop or SIGKILL at a random moment) and check the
# broker after each cycle; SOAK_BROKER=shared runs it against the configured broker instead of a node of its own.
soak: install
	$(BIN)/python -m bench.soak --cycles $${SOAK_CYCLES:-200} --broker $${SOAK_BROKER:-own} $${SOAK_ARGS:-}

# Every fault test (tests/e2e/test_faults.py), the slow ones included.
faults: install
	$(BIN)/pytest tests/e2e/test_faults.py -q
