# The two commands a new user needs (README): `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint install compile clean

$(BIN)/mxguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/mxguard

# Compile the hot modules again after editing one (until then they run from source: see
# src/mxguard/compiled.py). MXGUARD_PURE=1 installs without compiling.
compile: install
	$(BIN)/pip install -q --no-deps -e .

serve: install
	$(BIN)/mxguard serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src

test: install
	bash scripts/system-deps.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) mxguard-data .pytest_cache .mypy_cache build src/mxguard/compiled.json
	find src -name '*.so' -delete
