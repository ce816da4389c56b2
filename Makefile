# The two commands a new user needs (README): `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint install compile system-deps clean

$(BIN)/mxguard: pyproject.toml setup.py
	@echo "installing mxguard and its dependencies into $(VENV); the first time takes a minute or two (it compiles the hot modules)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@$(BIN)/mxguard version
	@touch $@

install: $(BIN)/mxguard

# Compile the hot modules again after editing one (until then they run from source: see
# src/mxguard/compiled.py). MXGUARD_PURE=1 installs without compiling.
compile: install
	@echo "compiling the hot modules (about a minute)"
	$(BIN)/pip install -q --no-deps -e .
	@$(BIN)/mxguard version

# The Debian packages the tests talk to, and gcc with Python's headers for the compiled build
# (as root: apt-get; otherwise it prints the command). Before the install, so that it compiles.
system-deps:
	bash scripts/system-deps.sh

serve: install
	$(BIN)/mxguard serve

lint: install
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/mypy --strict src

test: system-deps install
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/mypy --strict src
	$(BIN)/python -m pytest -q -p no:cacheprovider
	@echo "the unit tests again, on the sources the compiled modules were built from"
	MXGUARD_SOURCE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/e2e/test_compiled_build.py

clean:
	rm -rf $(VENV) mxguard-data .pytest_cache .mypy_cache build src/mxguard/compiled.json
	find src -name '*.so' -delete
