# Two commands on a fresh machine: `make demo` and `make test`. Each creates or refreshes .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install when the project metadata changes. torch/torchvision are pinned to the versions this
# machine has on disk (pip takes them without downloading); any version in pyproject's range works.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e ".[dev,ray,stats]"
	touch $(STAMP)

install: $(STAMP)

# computes afresh into runs/demo (git-ignored) and compares with the committed results/demo
demo: $(STAMP)
	$(VENV)/bin/l2t demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/env_overhead.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/batched.py

clean:
	rm -rf $(VENV) .pytest_cache
