# Two commands set everything up on a machine with only Python 3.11+ and make:
#   make demo   - virtual environment, install, embedded PostgreSQL, the whole asset graph, a sector summary
#   make test   - the same set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo dev test test-fast test-ui docs-screenshots health validate db-url db-stop clean

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

# The UI tests alone: a real `stock-assets dev`, GraphQL, and chromium (apt-get install chromium).
test-ui: $(STAMP)
	$(BIN)/python -m pytest stock_assets_tests/test_ui_graphql.py stock_assets_tests/test_ui_browser.py

# Re-take the README's screenshots (docs/*.png) from a real browser run; review them before committing.
docs-screenshots: $(STAMP)
	UPDATE_DOCS_SCREENSHOTS=1 $(BIN)/python -m pytest stock_assets_tests/test_ui_browser.py

# Is the system well? Exit status 1 when not; `.venv/bin/stock-assets health --json` for machines.
health: $(STAMP)
	$(BIN)/stock-assets health

validate: $(STAMP)
	$(BIN)/stock-assets validate

db-url: $(STAMP)
	@$(BIN)/stock-assets db url

db-stop: $(STAMP)
	$(BIN)/stock-assets db stop

clean:
	-$(BIN)/stock-assets db stop
	rm -rf .state
