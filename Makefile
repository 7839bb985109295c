# gsv_pipelines. On a machine with only Python 3.11 and make, every target installs what it needs
# (uv first, then the locked environment). The README's two commands: `make demo`, `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen

# make render / deploy-*: where, for which values-<ENV>.yaml, which image (by digest), and the
# outside addresses of the NetworkPolicies (EGRESS="kubernetes-api=10.0.0.1/32 registry=...").
RENDER_DIR ?= build/deploy
ENV ?= prod
IMAGE ?=
EGRESS ?=
RENDER = $(RUN) python scripts/render.py $(if $(IMAGE),--image $(IMAGE)) \
	$(foreach pair,$(EGRESS),--egress-cidr $(pair))

.PHONY: help demo dev seed test lint bench system-deps clean render deploy-qa deploy-prod deploy-dev

help:
	@echo "make demo         run every asset once on embedded defaults, print a summary"
	@echo "make dev          the Dagster UI on http://127.0.0.1:3000 with the same embedded services"
	@echo "make seed         write the demo data (Qdrant collections; Vault secrets if VAULT_TOKEN)"
	@echo "make test         the test suite against real services (installs them when root)"
	@echo "make lint         ruff check, ruff format --check, dg check defs"
	@echo "make bench        every benchmark, as ratios to a baseline measured in the same run"
	@echo "make system-deps  the Debian packages the tests need (postgresql-15, docker-registry, skopeo, prometheus, alertmanager)"
	@echo "make render       the Kubernetes manifests and Helm values, into $(RENDER_DIR)/$(ENV) (ENV, IMAGE, EGRESS)"
	@echo "make deploy-qa    render for GitOps promotion to QA (IMAGE=<repo>@sha256:<digest>), print the steps"
	@echo "make deploy-prod  the same for prod, only with the digest QA ran"
	@echo "make deploy-dev   render for a kind cluster and print how to run it there (needs Docker)"

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

demo: .venv/.synced
	$(RUN) gsv demo

dev: .venv/.synced
	$(RUN) gsv dev

seed: .venv/.synced
	$(RUN) gsv seed

system-deps:
	@bash scripts/install-system-deps

test: .venv/.synced system-deps
	$(RUN) pytest

lint: .venv/.synced
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) dg check defs

bench: .venv/.synced
	$(RUN) python -m benchmarks.run

render: .venv/.synced
	$(RENDER) --env $(ENV) --out $(RENDER_DIR)/$(ENV)

deploy-qa: .venv/.synced
	$(RENDER) --env prod --stage qa --out $(RENDER_DIR)/qa

deploy-prod: .venv/.synced
	$(RENDER) --env prod --stage prod --out $(RENDER_DIR)/prod

deploy-dev: .venv/.synced
	$(RENDER) --env dev --out $(RENDER_DIR)/dev

clean:
	rm -rf .gsv .pytest_cache .ruff_cache build
