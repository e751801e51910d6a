# tether developer entry points. Needs only python3 (>= 3.11), node and npm:
# everything else is installed into .venv/, conformance/node_modules/ and
# tests/aisdk/node_modules/.
#
#   make test     lint + the whole pytest suite, conformance included (CI runs this)
#   make serve    run the server from the venv, runtime dependencies only
#                 (make serve ARGS="--port 8080"; `. .venv/bin/activate` puts `tether` on PATH)
#   make lint     ruff check and format, mypy, the generated sync SDK
#   make bench    benchmarks/bench_streams.py   (make bench ARGS="...")
#   make docs     build the docs site (mkdocs.yml, docs/) strictly, into .venv/site/
#   make docs-config  rewrite docs/configuration.md from the CLI's options and env vars

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

# Stamps live inside the directories they describe, so deleting .venv/ or
# node_modules/ also forgets that they were installed. One per set of Python
# dependencies: serving needs only the runtime ones, tests and lint the dev extras.
RUN_STAMP := $(VENV)/.tether-installed
PY_STAMP  := $(VENV)/.tether-dev-installed
NPM_DIR   := conformance
NPM_STAMP := $(NPM_DIR)/node_modules/.tether-npm-ci
AISDK_DIR   := tests/aisdk
AISDK_STAMP := $(AISDK_DIR)/node_modules/.tether-npm-ci
ACP_DIR     := tests/agents/acp/published
ACP_STAMP   := $(ACP_DIR)/node_modules/.tether-npm-ci

.DEFAULT_GOAL := help
.PHONY: help venv serve test lint bench conformance

help:
	@sed -n '/^#/!q; s/^# \{0,1\}//p' Makefile

venv: $(PY_STAMP)

# Plain `python3 -m venv` needs ensurepip, which Debian ships separately
# (python3-venv); fall back to a pip-less venv filled by the system pip if present.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: tether needs Python >= 3.11, but $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { \
	  rm -rf $(VENV); \
	  echo "'$(PYTHON) -m venv' failed; trying a venv without pip + the system pip" >&2; \
	  $(PYTHON) -m venv --without-pip $(VENV) && $(PYTHON) -m pip --python $(BIN)/python install pip; \
	} || { \
	  rm -rf $(VENV); \
	  echo "error: could not create $(VENV). On Debian/Ubuntu: apt-get install python3-venv" >&2; \
	  exit 1; }

# Reinstall only when the dependency list changes (editable install: src/ edits
# need no reinstall). The dev extras include the runtime dependencies.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(PY_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@ $(RUN_STAMP)

# npm ci wipes node_modules, so the stamp is written after it. Without npm the
# conformance test skips itself locally; in CI (CI set) a missing npm is an error.
$(NPM_STAMP): $(NPM_DIR)/package-lock.json $(NPM_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(NPM_DIR) && npm ci --no-audit --no-fund && touch $(abspath $@); \
	elif [ -n "$${CI:-}" ]; then \
	  echo "error: npm not found; CI needs Node.js and npm for the conformance suite" >&2; exit 1; \
	else \
	  echo "warning: npm not found; the conformance test will be skipped" >&2; \
	fi

# The same for the Vercel AI SDK test (tests/api/test_aisdk.py runs the real `ai` package).
$(AISDK_STAMP): $(AISDK_DIR)/package-lock.json $(AISDK_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(AISDK_DIR) && npm ci --no-audit --no-fund && touch $(abspath $@); \
	elif [ -n "$${CI:-}" ]; then \
	  echo "error: npm not found; CI needs Node.js and npm for the AI SDK test" >&2; exit 1; \
	else \
	  echo "warning: npm not found; the AI SDK test will be skipped" >&2; \
	fi

# The same for the published ACP agent (tests/agents/acp/test_acp_published.py).
$(ACP_STAMP): $(ACP_DIR)/package-lock.json $(ACP_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(ACP_DIR) && npm ci --no-audit --no-fund && touch $(abspath $@); \
	elif [ -n "$${CI:-}" ]; then \
	  echo "error: npm not found; CI needs Node.js and npm for the ACP agent test" >&2; exit 1; \
	else \
	  echo "warning: npm not found; the published ACP agent test will be skipped" >&2; \
	fi

serve: $(RUN_STAMP)
	exec $(BIN)/tether serve $(ARGS)

# ruff, the formatter, the type checker, and the generated sync SDK up to date.
lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/unasync.py --check
	$(BIN)/python scripts/gen_config_docs.py --check

# System packages the tests drive for real: Debian's Chromium (the web UI's
# Playwright tests) and redis-server (the Redis store). Installed when missing.
SYS_STAMP := $(VENV)/.tether-sysdeps
$(SYS_STAMP): | $(BIN)/python
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v jq >/dev/null 2>&1 || missing="$$missing jq"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "error: need root to install$$missing (apt-get)" >&2; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

# pytest's own exit code is kept: 5 (no tests collected) fails the build too.
test: lint $(NPM_STAMP) $(AISDK_STAMP) $(ACP_STAMP) $(SYS_STAMP)
	$(BIN)/python scripts/run_tests.py $(ARGS)

# The docs site, strictly: a broken link or anchor fails it (tests/docs/ runs its
# examples). Not --quiet: with it mkdocs drops warnings before --strict counts them.
# configuration.md is generated: `make docs-config` after changing an option.
.PHONY: docs docs-config
test: docs
docs: $(PY_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site
docs-config: $(PY_STAMP)
	$(BIN)/python scripts/gen_config_docs.py

conformance: $(PY_STAMP) $(NPM_STAMP)
	$(BIN)/pytest -q -m conformance $(ARGS)

bench: $(PY_STAMP)
	$(BIN)/python benchmarks/bench_streams.py $(ARGS)
