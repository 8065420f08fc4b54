# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_DIR := tests/e2e/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: setup test lint format demo bench schemas clean

setup: $(STAMP)

$(STAMP): requirements/dev.txt requirements/constraints.txt packages/qconfig/pyproject.toml packages/qruntime/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt \
		-e packages/qconfig -e packages/qruntime
	touch $@

node: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json
	cd $(NODE_DIR) && npm install --no-audit --no-fund --silent
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup node lint
	TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q tests

demo: setup
	$(VENV)/bin/qruntime quantize --config examples/configs/int8_default.yaml

schemas: setup
	$(VENV)/bin/qconfig schema --all -o schemas

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules
