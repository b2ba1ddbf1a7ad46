# Every target creates .venv on first use; nothing needs to be installed beforehand but python3 and pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fmt serve package bench schemas openapi clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26.3"
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/testbuy demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chalicelib testbuy app.py
	$(BIN)/python -m testbuy.checks statelint
	$(BIN)/python -m testbuy.checks contracts

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

serve: $(STAMP)
	$(BIN)/testbuy serve

package: $(STAMP)
	$(BIN)/testbuy package --out build/package
	$(BIN)/cfn-lint build/package/sam.json

bench: $(STAMP)
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/faults.py

schemas: $(STAMP)
	$(BIN)/testbuy schemas --write

clean:
	rm -rf $(VENV) build .testbuy
