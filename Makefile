# The README's two commands are `make run` and `make test`; both bootstrap what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_STAMP := gen/.stamp

.PHONY: run test lint typecheck buflint gen bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# generated protobuf code is importable as `membership.<service>.v1`
	@echo "$(CURDIR)/gen" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/wallet_membership_gen.pth"
	@touch $@

$(GEN_STAMP): $(STAMP) $(PROTOS)
	$(BIN)/python -m membership_cli.protogen --proto-root protos --out gen
	@touch $@

gen: $(GEN_STAMP)

run: $(GEN_STAMP)
	$(BIN)/membership run

test: $(GEN_STAMP)
	@bash tests/support/ensure_chromium.sh || true
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/python -m pytest

lint: $(GEN_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint

typecheck: $(GEN_STAMP)
	$(BIN)/mypy

bench: $(GEN_STAMP)
	$(BIN)/python -m tests.bench.bench_accounts
	$(BIN)/python -m tests.bench.bench_settlement
	$(BIN)/python -m tests.bench.bench_privacy
	$(BIN)/python -m tests.bench.bench_gateway

clean:
	rm -rf gen $(VENV)
