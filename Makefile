# Every target bootstraps .venv itself: a fresh clone needs only Python 3.11+, a C compiler and PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 0
LOCATIONS ?= 6

SIMFAAS := .venv-simfaas/.installed

.PHONY: all venv simfaas demo test check fmt pytest bench clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edgefn needs Python 3.11 or newer; set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# SimFaaS (a published serverless simulator) in its own environment: tests/simulator compares
# edgefn's instance pools with it. Not a dependency of edgefn itself.
$(SIMFAAS):
	test -x .venv-simfaas/bin/python || $(PYTHON) -m venv .venv-simfaas
	.venv-simfaas/bin/python -m pip install --quiet 'simfaas==0.2.2'
	touch $(SIMFAAS)

simfaas: $(SIMFAAS)

demo: $(STAMP)
	DEMO_SECONDS=$(DEMO_SECONDS) $(BIN)/edgefn demo --locations $(LOCATIONS)

check: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Pure-logic suites (no planets) on both cores; the planet tests one at a time, as their timing
# bounds assume a machine that is not also running another planet.
PARALLEL_TESTS := tests/unit tests/sim tests/simulator

pytest: $(STAMP) $(SIMFAAS)
	.ci/debian-packages
	$(BIN)/pytest -q -n 2 --durations=10 $(PARALLEL_TESTS)
	$(BIN)/pytest -q --durations=20 $(addprefix --ignore=,$(PARALLEL_TESTS))

test: check pytest

bench: $(STAMP)
	$(BIN)/edgefn bench all --json

clean:
	rm -rf $(VENV) .venv-simfaas build *.egg-info src/*.egg-info .mypy_cache .ruff_cache
