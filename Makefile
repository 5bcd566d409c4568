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

# every benchmark in one go, then one report over them (JSON, Markdown, PNG, the README's
# section). BENCH_QUICK=1 (or `make bench-quick`): small sizes, a smoke check of a few minutes;
# its JSON goes to bench-results/quick/ so that it never replaces a full run's figures.
BENCH_DIR = $(if $(BENCH_QUICK),bench-results/quick,bench-results)
bench_quick = $(if $(BENCH_QUICK),$(1))
.PHONY: bench-quick
bench: $(GEN_STAMP)
	@mkdir -p $(BENCH_DIR) && touch $(BENCH_DIR)/.run-started
	$(BIN)/python -m tests.bench.bench_accounts --output $(BENCH_DIR)/accounts.json \
	  $(call bench_quick,--calls 100 --warmup 20)
	$(BIN)/python -m tests.bench.bench_settlement --output $(BENCH_DIR)/settlement.json \
	  $(call bench_quick,--rounds 1 --seconds 2 --members 200 --scale 1)
	$(BIN)/python -m tests.bench.bench_campaigns --output $(BENCH_DIR)/campaigns.json \
	  $(call bench_quick,--rounds 1 --seconds 2 --members 200)
	$(BIN)/python -m tests.bench.bench_privacy --output $(BENCH_DIR)/privacy.json \
	  $(call bench_quick,--transactions 2000 --access-runs 1 --deletions 3 \
	    --balance-calls 50 --seconds 1 --consent-members 20)
	$(BIN)/python -m tests.bench.bench_export_bundle --output $(BENCH_DIR)/export_bundle.json \
	  $(call bench_quick,--transactions 5000 --rounds 1 --sample 1000)
	$(BIN)/python -m tests.bench.bench_gateway --output $(BENCH_DIR)/gateway.json \
	  $(call bench_quick,--rounds 1 --seconds 2 --warmup 0.5 --members 200)
	$(BIN)/python -m tests.bench.report --results-dir $(BENCH_DIR) --readme README.md \
	  --publish docs/bench $(call bench_quick,--quick)

bench-quick:
	$(MAKE) bench BENCH_QUICK=1

# fault tests (kill -9, PostgreSQL restart, privacy down, backup under load); each on its own
# embedded PostgreSQL and loopback ports, bounded by pytest-timeout
.PHONY: chaos soak
chaos: $(GEN_STAMP)
	$(BIN)/python -m pytest -q tests/chaos

# light enough to run beside `make test`: SOAK_S seconds at SOAK_RATE calls per second
SOAK_S ?= 300
SOAK_RATE ?= 20
SOAK_REPORT ?= bench-results/soak.json
soak: $(GEN_STAMP)
	@mkdir -p $(dir $(SOAK_REPORT))
	$(BIN)/python -m tests.chaos.soak --duration-s $(SOAK_S) --rate-per-s $(SOAK_RATE) \
	  --report $(SOAK_REPORT)

clean:
	rm -rf gen $(VENV)
