# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_DIR := tests/e2e/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: setup test lint format demo bench schemas clean gpu-wheels gpu-check-dry kernels-triton36

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

# The long fuzz run (tests/fuzz/README.md): the fuzz suite's [long] variants, >= 50,000
# generated examples in all (QCONFIG_FUZZ_EXAMPLES=N for more), random seeds; `make test` runs
# the few thousand derandomized [default] ones.
.PHONY: fuzz-long
fuzz-long: setup
	TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q -m fuzz_long tests/fuzz

# The job is examples/embedding_job (docs/getting-started.md); --progress: bars on stderr even
# when it is not a terminal; --kv-cache: a second accuracy row with FP8_KV_CFG appended (the
# k/v bmm quantizers of BERT's attention).
demo: setup
	mkdir -p build/demo
	$(VENV)/bin/qruntime quantize --job examples/embedding_job --progress \
		--config examples/configs/int8_default.yaml --kv-cache FP8_KV_CFG \
		-o build/demo/int8_state.safetensors
	$(VENV)/bin/qruntime export --state build/demo/int8_state.safetensors \
		--format compressed-tensors --drop-unexportable -o build/demo/int8_compressed_tensors
	du -sh build/demo/int8_compressed_tensors

schemas: setup
	$(VENV)/bin/qconfig schema --all -o schemas

# GPU check (docs/kernels.md): the GPU machine's Python (3.12) lacks qruntime's pure-Python
# dependencies; download them as wheels (same versions as the venv) into a git-ignored folder
# that the device call carries, then run `bash bench/gpu_check.sh` there.
GPU_WHEELS ?= .gpu-wheels
GPU_PYTHON ?= 3.12
GPU_DEPS := pydantic pydantic[-_]core annotated[-_]types typing[-_]inspection typing[-_]extensions \
	jsonschema jsonschema[-_]specifications referencing rpds[-_]py attrs pyyaml ruamel[.]yaml tqdm \
	rich markdown[-_]it[-_]py mdurl pygments
GPU_PLATFORMS := $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64

gpu-wheels: setup
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS) \
		$$($(PY) -m pip freeze | grep -iE '^($(subst $(eval) ,|,$(strip $(GPU_DEPS))))==')
	ls $(GPU_WHEELS)

# The same steps on this CPU machine (TRITON_INTERPRET=1, tiny sizes), wheels for this Python.
gpu-check-dry: setup
	$(MAKE) gpu-wheels GPU_WHEELS=.gpu-wheels-dry \
		GPU_PYTHON=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	GPU_WHEELS=.gpu-wheels-dry PYTHON=$(PY) GPU_TEST_WORKERS=2 bash bench/gpu_check.sh --dry-run

# The GPU image has Triton 3.6, CI has PyPI's: run the kernel tests in 3.6's interpreter too
# (its language semantics differ, e.g. unary minus; docs/kernels.md). Downloads ~190 MB once.
TRITON36 := .triton36
kernels-triton36: setup
	test -d $(TRITON36)/triton || $(PY) -m pip install -q --no-deps --target $(TRITON36) triton==3.6.0
	TRITON_INTERPRET=1 PYTHONPATH=$(TRITON36) $(PY) -c 'import triton; assert triton.__version__ == "3.6.0", triton.__version__'
	TRITON_INTERPRET=1 PYTHONPATH=$(TRITON36) $(PY) -m pytest -n 2 -q tests/qruntime/test_kernels.py

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules

# Peer libraries for benchmarks only (bench/peer_llmcompressor.py, `bench/bench_accuracy.py
# --peers`): their own git-ignored venv, because llm-compressor 0.14 requires a transformers the
# dev venv cannot take (requirements/peers.txt). Not part of `setup` or `test`; peers-test runs
# the anchor's own check (bench/test_peer_llmcompressor.py) in that venv.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
.PHONY: peers peers-test
peers: $(PEERS_STAMP)

$(PEERS_STAMP): requirements/peers.txt requirements/constraints.txt packages/qconfig/pyproject.toml packages/qruntime/pyproject.toml
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -c requirements/constraints.txt torch==2.13.0
	$(PEERS_VENV)/bin/python -m pip install -q -c requirements/constraints.txt \
		-r requirements/peers.txt -e packages/qconfig -e packages/qruntime
	touch $@

peers-test: peers
	$(PEERS_VENV)/bin/python -m pytest -q bench/test_peer_llmcompressor.py
