# ogsrl — `make run` runs the whole pipeline on the demo data; `make test` runs the whole test suite.
# Both create .venv (Python 3.11) and install the pinned dependencies first; the install is skipped while the
# stamp file is newer than requirements.lock and pyproject.toml.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.ogsrl-installed
# Extra pip arguments, e.g. PIP_INSTALL_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_INSTALL_ARGS ?=
PYTEST_ARGS ?= -n 2

# Offline and quiet: the same defaults ogsrl.env.setdefaults() applies (values already set win).
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS ?= 1
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/.dvc/site-cache
export MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export DO_NOT_TRACK ?= true
export GX_ANALYTICS_ENABLED ?= false

.PHONY: help install run flow test test-fast clean-venv

help:
	@echo "make run       create .venv, install pinned deps, run the pipeline on the demo (dvc repro), print where results are"
	@echo "make test      create .venv, install pinned deps, run every test (end-to-end ones included; ~16 min on 2 cores)"
	@echo "make test-fast the same without the end-to-end tests marked slow (~1 min)"
	@echo "make flow      run the pipeline as a Prefect flow (ephemeral API) through dvc repro"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet $(PIP_INSTALL_ARGS) -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	ogsrl salt-fingerprint
	dvc repro
	ogsrl release
	@echo
	@echo "Results (under $(CURDIR)):"
	@echo "  raw demo tables   data/raw/{hosp,icu}/"
	@echo "  trajectories      data/trajectories/{train,val,test}.parquet"
	@echo "  models            data/models/{world,guardian,policies,behaviour}/"
	@echo "  metrics           data/reports/*.json, data/reports/evaluate/   (dvc metrics show; dvc metrics diff)"
	@echo "  validation docs   data/reports/validation/{raw,trajectories}/index.html"
	@echo "  OPE metrics       data/reports/evaluate/metrics.json   (OPE estimates beside the simulator's true values)"
	@echo "  clinical metrics  data/reports/clinical.json   (ME, MCR, AIR, ACP, threshold shares; docs/metrics.md)"
	@echo "  MLflow UI         .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000"
	@echo "  registry          data/reports/registry.json; the gate's decision is the 'Gate:' line above"
	@python -c 'import json; m = json.load(open("data/reports/cohort.json")); print("  cohort            %s stays, %s rows, in-hospital mortality %.3f" % (m["cohort_stays"], m["rows"], m["mortality_in_hosp"]))' 
	@echo
	@echo "Report (self-contained, opens offline): $(CURDIR)/data/reports/index.html"
	@echo
	@python -c 'import json; print(json.load(open("data/reports/registry.json"))["registry/conclusion"])'

flow: $(STAMP)
	ogsrl salt-fingerprint
	python -m flows.pipeline --dvc

test: $(STAMP)
	python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	python -m pytest -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
