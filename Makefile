# Two commands set everything up on a machine with only Python 3.11+ and make:
#   make demo   - virtual environment, install, embedded PostgreSQL, the whole asset graph, a sector summary
#   make test   - the same set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo dev test test-fast validate db-url db-stop clean

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stock-assets demo

dev: $(STAMP)
	$(BIN)/stock-assets dev

test: $(STAMP)
	$(BIN)/python -m pytest

validate: $(STAMP)
	$(BIN)/stock-assets validate

db-url: $(STAMP)
	@$(BIN)/stock-assets db url

db-stop: $(STAMP)
	$(BIN)/stock-assets db stop

clean:
	-$(BIN)/stock-assets db stop
	rm -rf .state
