# Two commands do everything on a fresh machine with only python3:
#   make test   -- create .venv, install graft with its test extras, ruff, mypy --strict, pytest
#   make demo   -- run the main demonstration
# Also: make bench (core, simulator and TCP benchmarks, then graft against PySyncObj and the
# floor), make fuzz SEEDS=N (long simulator sweep, then 10^6 fuzzed frames: make fuzz-frames,
# every storage crash state: make crash-states),
# make demo-core (the in-memory core demo), make jepsen (5 real processes under a nemesis;
# make fuzz ends with a campaign of them: make jepsen-campaign),
# make notebooks (execute notebooks/*.ipynb with full parameters and save their outputs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test demo demo-core bench fuzz fuzz-frames crash-states jepsen jepsen-campaign lint \
	typecheck clean notebooks

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

# A long simulator sweep, then the frame-decoder fuzzer:
#   make fuzz SEEDS=10000 [PROCESSES=2] [FIRST=0] [FRAMES=1000000] [FRAME_SEED=1]
SEEDS ?= 2000
FIRST ?= 0
PROCESSES ?= 2
fuzz: $(STAMP)
	$(BIN)/python -m graft_sim --seeds $(FIRST):$$(($(FIRST) + $(SEEDS))) \
		--processes $(PROCESSES) --duration 20000 --fail-file fuzz-failures.txt
	$(MAKE) fuzz-frames
	$(MAKE) crash-states
	$(MAKE) jepsen-campaign

# Every crash state of the storage's recorded workloads (ALICE-style; ~7,000 states):
crash-states: $(STAMP)
	GRAFT_CRASH_STATES=exhaustive $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_crash_states.py

# 10^6 mutated frames through graft_trio/_wire.py's decoders (a few minutes):
#   make fuzz-frames [FRAMES=1000000] [FRAME_SEED=1]
FRAMES ?= 1000000
FRAME_SEED ?= 1
fuzz-frames: $(STAMP)
	$(BIN)/python -m graft_trio._fuzz_frames --frames $(FRAMES) --seed $(FRAME_SEED)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

# Jepsen-style: 5 K/V processes, clients, kills, pauses and partitions, then the
# linearizability checker (graft_trio/jepsen.py):
#   make jepsen [JEPSEN_SEED=1] [JEPSEN_DURATION=30] [JEPSEN_CLIENTS=8]
#   make jepsen-campaign [JEPSEN_RUNS=10]   (runs seeds JEPSEN_SEED.., 60 s each)
JEPSEN_SEED ?= 1
JEPSEN_DURATION ?= 30
JEPSEN_CLIENTS ?= 8
JEPSEN_RUNS ?= 10
jepsen: $(STAMP)
	$(BIN)/python -m graft_trio.jepsen --nodes 5 --duration $(JEPSEN_DURATION) \
		--clients $(JEPSEN_CLIENTS) --seed $(JEPSEN_SEED)
jepsen-campaign: $(STAMP)
	$(BIN)/python -m graft_trio.jepsen --nodes 5 --duration 60 --clients $(JEPSEN_CLIENTS) \
		--seed $(JEPSEN_SEED) --runs $(JEPSEN_RUNS)
