# metricfold: the two commands are `make demo` and `make test`; both set up what they need.
# Run `make help` for the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh

.DEFAULT_GOAL := help
.PHONY: help venv up down status demo test chaos report browser prometheus lint bench clean-stack

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "metricfold needs Python 3.11 or newer; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv and install metricfold with its dev extras

up: venv ## start Kafka (KRaft) and Redis on 127.0.0.1 if they are not running, and wait until they answer
	bash $(STACK) up

down: ## stop the local Kafka and Redis that `make up` started
	bash $(STACK) down

status: ## say what runs where
	bash $(STACK) status

demo: up ## the main job: simulated trainers -> Kafka -> consumer -> Redis, then the summaries
	if [[ "$$(bash $(STACK) mode)" == secure ]]; then $(PY) deploy/local/secure_demo.py; else source .stack/env && $(VENV)/bin/metricfold demo; fi

browser: ## Debian's chromium for the browser test (installed with apt-get when missing and root)
	bash deploy/local/browser.sh

prometheus: ## Debian's prometheus for the metrics test (installed with apt-get when missing and root; else that test skips)
	bash deploy/local/prometheus.sh || echo "[prometheus] not installed: tests/test_metrics.py's scrape test will be skipped"

# the test suite, the chaos scenarios and the report need the plain dev stack (the secure cases start their own)
test chaos report: export METRICFOLD_SECURE := 0

test: up browser prometheus ## run the whole test suite against the real broker and server (chaos scenarios in their short form)
	$(VENV)/bin/pytest -q

chaos: up ## the chaos scenarios in full (tests/chaos), on a private stack of their own
	METRICFOLD_CHAOS=full $(VENV)/bin/pytest -q tests/chaos

report: up ## run the benchmarks and the chaos summary, write docs/REPORT.md and its plot
	$(PY) bench/report.py

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check producer consumer schemas tests bench deploy
	$(VENV)/bin/mypy

clean-stack: down ## stop the stack and delete its data and logs (.stack/); the jar cache stays
	rm -rf .stack
