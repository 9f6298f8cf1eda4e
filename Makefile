# Every target works on a fresh clone: `install` builds .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch build pinned here is the one this project is tested with (CPU or CUDA, same code).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/pyro-bkd demo --out runs/demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) benchmarks/bench_sgld.py

clean:
	rm -rf $(VENV) runs build *.egg-info
