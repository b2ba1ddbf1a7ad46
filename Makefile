# Every target creates .venv on first use; nothing needs to be installed beforehand but python3 and pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov pins boto3==1.35.49, which conflicts with ours: it gets its own virtualenv, every package pinned.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: demo test lint fmt serve package bench schemas openapi clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26.3"
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade "pip<26.3"
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

demo: $(STAMP)
	$(BIN)/testbuy demo $(DEMO_ARGS)

test: $(STAMP)
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest

# lint packages the template into build/package (chalice package: about a minute on a cold dependency cache, seconds
# after) because the IAM check and checkov read the packaged template, which is what gets deployed.
lint: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chalicelib testbuy app.py
	$(BIN)/python -m testbuy.checks statelint
	$(BIN)/python -m testbuy.checks contracts
	$(BIN)/python -m testbuy.checks policies
	$(BIN)/python -m testbuy.checks bandit
	$(BIN)/testbuy package --out build/package
	$(BIN)/python -m testbuy.checks iam build/package/sam.json
	$(BIN)/python -m testbuy.checks checkov build/package/sam.json

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# make serve SERVE_ARGS='--no-labs' (or --no-marketplace, --marketplace-url URL, --lab ID, --seed N)
serve: $(STAMP)
	$(BIN)/testbuy serve $(SERVE_ARGS)

package: $(STAMP)
	$(BIN)/testbuy package --out build/package
	$(BIN)/cfn-lint build/package/sam.json

bench: $(STAMP)
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/import_time.py
	$(BIN)/python benchmarks/faults.py

schemas: $(STAMP)
	$(BIN)/testbuy schemas --write

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build .testbuy
