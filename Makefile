# Two commands do everything on a fresh machine with only python3:
#   make test   -- create .venv, install graft with its test extras, ruff, mypy --strict, pytest
#   make demo   -- run the main demonstration
# Also: make bench (core, simulator and TCP benchmarks, then graft against PySyncObj and the
# floor), make fuzz SEEDS=N (long simulator sweep), make demo-core (the in-memory core demo),
# make notebooks (execute notebooks/*.ipynb with full parameters and save their outputs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test demo demo-core bench fuzz lint typecheck clean notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check graft_core graft_trio graft_sim tests benchmarks examples notebooks

typecheck: $(STAMP)
	$(BIN)/mypy --strict graft_core graft_trio graft_sim tests examples benchmarks notebooks

test: lint typecheck
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python examples/trio_demo.py

demo-core: $(STAMP)
	$(BIN)/python examples/core_demo.py

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# bench_compare.py writes benchmarks/results/latest.json (JSON=path to change it).
JSON ?= benchmarks/results/latest.json
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_trio.py
	$(BIN)/python benchmarks/bench_compare.py --json $(JSON)

# The notebooks with full parameters (1,000 Figure 16 trials per line: a few minutes),
# outputs saved into the files; make test runs them with small parameters.
notebooks: $(STAMP)
	$(BIN)/python notebooks/execute.py

# A long simulator sweep: make fuzz SEEDS=10000 [PROCESSES=2] [FIRST=0]
SEEDS ?= 2000
FIRST ?= 0
PROCESSES ?= 2
fuzz: $(STAMP)
	$(BIN)/python -m graft_sim --seeds $(FIRST):$$(($(FIRST) + $(SEEDS))) \
		--processes $(PROCESSES) --duration 20000 --fail-file fuzz-failures.txt

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
