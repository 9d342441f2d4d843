# Two commands on a fresh machine: `make demo` and `make test`. Each creates or refreshes .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Each command installs only what it needs (re-installed when the project metadata changes):
#   make demo / bench: the package and its dependencies (torch, gymnasium, SB3, pandas, seaborn)
#   make test / lint:  also the extras the tests use: dev (pytest, ruff), ray (the Ray backend's
#                      tests, ~240 MB), stats (rliable, checked against the built-in estimators)
# torch/torchvision are pinned to the versions this machine has on disk (pip takes them without
# downloading); any version in pyproject's range works. PyPI's Linux torch pulls the CUDA
# libraries (nvidia-* 3.2 GB and triton 0.9 GB of the 6.4 GB venv, measured 2026-12-02); on a
# machine without a GPU, `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` asks for
# the CPU-only build instead (not tried here: this machine reaches only the package registry).
TORCH_INDEX ?=
CORE := $(VENV)/.installed-core

$(CORE): pyproject.toml | $(PY)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX),$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install --quiet torch torchvision)
	$(PY) -m pip install --quiet -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(PY) -m pip install --quiet -e ".[dev,ray,stats]"
	touch $(STAMP)

install: $(STAMP)

# computes afresh into runs/demo (git-ignored) and compares with the committed results/demo
demo: $(CORE)
	$(VENV)/bin/l2t demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(CORE)
	$(PY) benchmarks/env_overhead.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/batched.py

clean:
	rm -rf $(VENV) .pytest_cache
