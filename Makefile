# infermeter — the README's quick start is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := prometheus prometheus-alertmanager libcjson-dev gcc libc6-dev

.PHONY: test lint unit system-deps demo bench soak golden rules docs clean

test: system-deps $(STAMP) lint unit ## every test, on a fresh Debian machine as root

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Tools the tests run for real: Prometheus and promtool, Alertmanager, gcc and cJSON (fake NVML).
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	[ -f /usr/include/cjson/cJSON.h ] || missing="$$missing libcjson-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "install as root: apt-get install$$missing"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term:skip-covered

demo: system-deps $(STAMP) ## the sidecar on 2 simulated GPUs (fake NVML), until Ctrl-C
	$(PY) -m tests.demo

bench: system-deps $(STAMP) ## benchmarks; results in bench/results/
	$(PY) -m bench.scrape
	$(PY) -m bench.proxy_latency

soak: system-deps $(STAMP) ## 50,000 requests with 10% faults: nothing may leak
	$(PY) -m bench.soak --requests 50000

golden: system-deps $(STAMP) ## rewrite golden /metrics files after an intended change
	$(PY) -m pytest tests/e2e -k golden --update-golden

rules: $(STAMP) ## re-render deploy/prometheus from src/infermeter/rules
	$(VENV)/bin/infermeter rules --out deploy/prometheus
	$(PY) -m tests.rules.render_tests

docs: $(STAMP) ## regenerate the README reference tables
	$(PY) -m infermeter.reference README.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage
