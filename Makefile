# proxyota — the two commands: `make test` and `make demo`.
# Each creates .venv with Python >= 3.11 if missing and installs the project into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test demo bench venv clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "proxyota needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m proxyota demo --config configs/demo.toml

bench: $(STAMP)
	$(PY) benchmarks/fec.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
