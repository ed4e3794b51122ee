# The project's commands. `make run` and `make test` set up whatever is missing first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/bank/v1/*.proto)
PYTEST_ARGS ?=


.PHONY: setup run tour test test-unit test-integration lint format proto chaos bench deploy-files clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	@bash scripts/bootstrap.sh

## The main demo: a 3-DC cluster, 100,000 accounts, Locust load, a DC killed and restarted,
## the books checked, a report in reports/<timestamp>/, everything stopped.
run: setup
	@echo "[run] bankctl demo: cluster up, accounts loaded, load with a DC failure, report, down"
	@$(VENV)/bin/bankctl --home .bank/demo demo

## One shard on its own PostgreSQL and a scripted banking session (a quick look at the ledger).
tour: setup
	@$(VENV)/bin/bankctl tour

## Lint, then every test tier (the integration tiers start real PostgreSQL; the compose tier
## builds the image and runs the cluster on Docker's engine, started when none runs).
test: setup lint
	@echo "[test] pytest: unit, integration, chaos and compose tiers"
	@$(PY) -m pytest -ra --durations=10 $(PYTEST_ARGS) tests/unit tests/integration tests/chaos tests/compose

## The fast loop: no services, seconds.
test-unit: setup
	@$(PY) -m pytest -q $(PYTEST_ARGS) tests/unit

test-integration: setup
	@$(PY) -m pytest -ra $(PYTEST_ARGS) tests/integration

lint: setup
	@echo "[lint] ruff check, ruff format --check, mypy"
	@$(VENV)/bin/ruff check services bankclient bench loadtest tests scripts
	@$(VENV)/bin/ruff format --check services bankclient bench loadtest tests scripts
	@$(VENV)/bin/mypy

format: setup
	@$(VENV)/bin/ruff check --fix services bankclient bench loadtest tests scripts
	@$(VENV)/bin/ruff format services bankclient bench loadtest tests scripts

## The long fault run: ten seeds of five minutes on a fresh cluster (about an hour);
## SEEDS=1-3 MINUTES=2 make chaos for a shorter one.
chaos: setup
	@echo "[chaos] bankctl chaos run over seeds $${SEEDS:-1-10}, $${MINUTES:-5} minutes each"
	@$(PY) scripts/chaos_soak.py --seeds $${SEEDS:-1-10} --minutes $${MINUTES:-5}

## The benchmark: pgbench on a shard's primary vs the full path and the batch API, same run.
bench: setup
	@echo "[bench] bankctl bench: fresh cluster, pgbench, single transfers, coalesced, batches (about 4 minutes)"
	@$(VENV)/bin/bankctl --home .bank bench --profile

## Renders the compose file, Kubernetes manifests and the picture from the topology.
deploy-files: setup
	@echo "[deploy-files] rendering deploy/ from services/cluster/topology.py"
	@$(PY) -m services.render.deploy_files

## Regenerates the committed gRPC stubs under gen/ from proto/.
proto: setup
	@echo "[proto] generating gen/bank/v1 from $(PROTOS)"
	@$(PY) -m services.rpc.protogen gen

clean:
	rm -rf .bank reports .pytest_cache .mypy_cache .ruff_cache
