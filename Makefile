# Two commands for a newcomer: `make report` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PRESET ?= default

.PHONY: install report test lab bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: execute every notebook on the default preset into reports/default/
report: $(STAMP)
	$(PY) -m workbench report --preset $(PRESET)

## The whole test suite (unit tests + every notebook on the ci preset, checked with nbval)
test: $(STAMP)
	$(PY) -m pytest -q

## JupyterLab on the notebooks
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

## Benchmarks, e.g. `make bench NAME=zoo PRESET=default`
bench: $(STAMP)
	$(PY) -m workbench bench $(NAME) --preset $(PRESET)

clean-runs:
	rm -rf runs reports/ci reports/default
