# pcn — everything a newcomer needs starts here. `make demo` runs the main job, `make test`
# runs every test. Both install what they need (venv, npm chain tools, Redis) by themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CHAIN := chain-devnet
BIN := $(CHAIN)/node_modules/.bin
FORGE := $(BIN)/forge
SOLC_ADAPTER := $(abspath $(CHAIN)/solc-adapter.js)
FORGE_FLAGS := --use $(SOLC_ADAPTER)
# Fuzz/invariant depth: the `ci` profile (10,000 fuzz runs, fixed seed) unless overridden.
FOUNDRY_PROFILE ?= ci
export FOUNDRY_PROFILE

.PHONY: help deps test test-contracts test-python lint typecheck bench bench-peers demo demo-down clean

help:
	@echo "make demo   - devnet, contracts, organisations and a full task lifecycle"
	@echo "make test   - contract tests (forge) and Python tests against a real anvil"
	@echo "make lint   - ruff, mypy, forge fmt/lint, solhint, Slither (fails on any high/medium finding)"
	@echo "make bench  - benchmarks in bench/ (installs their peers, e.g. SecretFlow SPU, in .venv/spu)"

$(VENV)/.stamp: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "pcn needs Python >= 3.11"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,bench]'
	touch $@

$(CHAIN)/node_modules/.stamp: $(CHAIN)/package.json $(CHAIN)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js >= 18) is needed for the chain tools"; exit 1; }
	cd $(CHAIN) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the tests use: a Redis server binary (each test network starts its own on
# a private port), tcpdump (the no-plaintext-on-the-wire test), Chromium (the dashboard's
# browser test), nftables (the namespace test's outbound-only hosts drop every inbound
# connection). Installed when missing and we are root; otherwise a clear message.
SYSTEM_PACKAGES := redis-server:redis-server tcpdump:tcpdump chromium:chromium nft:nftables
.system-check: Makefile
	@missing=""; for pair in $(SYSTEM_PACKAGES); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing — install them (e.g. sudo apt-get install$$missing) and re-run"; exit 1; \
	  fi; fi
	@touch $@

deps: $(VENV)/.stamp $(CHAIN)/node_modules/.stamp .system-check

# One pytest-xdist worker per core (at most 4; serial on 1 core): each worker takes whole test
# files (a file's fixtures start its network once), end-to-end modules first
# (tests/conftest.py). TEST_WORKERS=0 runs serially. The slowest tests are listed at the end.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); if [ $$n -le 1 ]; then echo 0; elif [ $$n -ge 4 ]; then echo 4; else echo $$n; fi)
CONTRACT_TESTS := cd contracts && ../$(FORGE) test $(FORGE_FLAGS) -q
PYTHON_TESTS := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# The contract tests (forge: about 75 s of fuzzing and invariants on both cores) run beside
# pytest at the lowest CPU priority (nice 19), so they fill what pytest's end-to-end tests
# leave idle instead of slowing them; their output follows pytest's, and either failing fails
# `make test`. `make test-contracts` / `make test-python` run one side.
test: deps
	@log=$$(mktemp); echo "contract tests (forge) run beside pytest; their output follows pytest's"; \
	nice -n 19 sh -c '$(CONTRACT_TESTS)' > $$log 2>&1 & contracts=$$!; \
	$(PYTHON_TESTS); python=$$?; \
	wait $$contracts; forge=$$?; \
	echo "---------------------------- contract tests (forge) ----------------------------"; \
	cat $$log; rm -f $$log; \
	[ $$forge -eq 0 ] || echo "make test: the contract tests FAILED (exit $$forge)"; \
	[ $$python -eq 0 ] || echo "make test: the Python tests FAILED (exit $$python)"; \
	[ $$python -eq 0 ] && [ $$forge -eq 0 ]

test-contracts: deps
	$(CONTRACT_TESTS)

test-python: deps
	$(PYTHON_TESTS)

# solhint uses contracts/.solhint.json. Slither runs from its own venv, .venv/slither, built
# from pyproject's `slither` dependency group (slither-analyzer pins web3 < 8, pcn needs 8).
# It analyses a forge build of src/ with the solc-js adapter in a private out dir, with an
# absolute @openzeppelin/ remapping: with the relative one, forge names some OpenZeppelin files
# by two paths and Slither cannot join the two ASTs. Settings: contracts/slither.config.json;
# explained findings: contracts/LINT.md.
lint: SLITHER_VENV := $(VENV)/slither
lint: deps typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd contracts && ../$(FORGE) fmt --check
	cd contracts && ../$(FORGE) lint $(FORGE_FLAGS)
	cd contracts && ../$(BIN)/solhint --disc --noPoster --max-warnings 0 'src/**/*.sol'
	@test $(SLITHER_VENV)/.stamp -nt pyproject.toml || { echo "installing Slither into $(SLITHER_VENV)" && \
	  (test -x $(SLITHER_VENV)/bin/pip || $(PYTHON) -m venv $(SLITHER_VENV)) && \
	  $(SLITHER_VENV)/bin/pip install -q --upgrade pip && \
	  $(SLITHER_VENV)/bin/pip install -q --group slither && touch $(SLITHER_VENV)/.stamp; }
	cd contracts && rm -rf cache/slither && ../$(FORGE) build src $(FORGE_FLAGS) -q --build-info \
	  --out cache/slither/out --cache-path cache/slither/cache \
	  --remappings @openzeppelin/=$(abspath $(CHAIN))/node_modules/@openzeppelin/
	cd contracts && PATH="$(abspath $(BIN)):$$PATH" ../$(SLITHER_VENV)/bin/slither . \
	  --config-file slither.config.json --fail-medium

# mypy finds packages by their folders, but pyproject's package-dir maps three folders (node/,
# chain-devnet/devnet, auditor/) onto one package `pcn`. So mypy checks a symlink farm with
# the installed layout: $(TYPECHECK_DIR)/pcn links to each entry of node/ plus devnet/ and
# auditor/. Its messages therefore name installed paths (pcn/cli/main.py is node/cli/main.py).
# Settings: pyproject's [tool.mypy].
TYPECHECK_DIR := build/typecheck
typecheck: deps
	rm -rf $(TYPECHECK_DIR)/pcn && mkdir -p $(TYPECHECK_DIR)/pcn
	ln -s $(abspath $(filter-out %/__pycache__,$(wildcard node/*))) $(TYPECHECK_DIR)/pcn/
	ln -s $(abspath $(CHAIN)/devnet) $(TYPECHECK_DIR)/pcn/devnet
	ln -s $(abspath auditor) $(TYPECHECK_DIR)/pcn/auditor
	cd $(TYPECHECK_DIR) && $(abspath $(VENV))/bin/mypy --config-file $(abspath pyproject.toml) -p pcn

# SecretFlow SPU, the PSI peer of bench/psi_ot.py (RR22 and KKRT), lives in its own venv,
# .venv/spu, from pyproject's `spu-peer` group: spu 0.9.5 pins numpy < 2 and jax, which pcn's
# venv cannot hold. Only the benchmarks use it; bench/spu_party.py is one SPU party.
SPU_VENV := $(VENV)/spu
bench-peers: deps
	@test $(SPU_VENV)/.stamp -nt pyproject.toml || { echo "installing SPU into $(SPU_VENV)" && \
	  (test -x $(SPU_VENV)/bin/pip || $(PYTHON) -m venv $(SPU_VENV)) && \
	  $(SPU_VENV)/bin/pip install -q --upgrade pip && \
	  $(SPU_VENV)/bin/pip install -q --group spu-peer && touch $(SPU_VENV)/.stamp; }

bench: deps bench-peers
	@for b in bench/*.py; do case $$b in bench/spu_party.py|bench/common.py) continue;; esac; \
	  echo "== $$b"; $(PY) $$b || exit 1; done

demo: deps
	$(VENV)/bin/pcn demo

demo-down:
	-$(VENV)/bin/pcn demo --down

gas-snapshot: deps
	cd contracts && FOUNDRY_PROFILE=default ../$(FORGE) snapshot $(FORGE_FLAGS)

clean:
	rm -rf contracts/out contracts/cache $(CHAIN)/build build .pytest_cache .ruff_cache
