# Two commands for a newcomer: `make report` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PRESET ?= default

.PHONY: install report test lab bench clean-runs lock

LOCK   := requirements.lock

# Installs the exact versions of $(LOCK) (what CI tests); pyproject.toml keeps the ranges for library users.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: execute every notebook on the default preset into reports/default/
report: $(STAMP)
	$(PY) -m workbench report --preset $(PRESET)

## The whole test suite (unit tests + every notebook on the ci preset, checked with nbval)
test: $(STAMP)
	$(PY) -m pytest -q

## JupyterLab on the notebooks
# --allow-root: containers run as root, where JupyterLab otherwise refuses to start
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

## Benchmarks, e.g. `make bench NAME=zoo PRESET=default`
bench: $(STAMP)
	$(PY) -m workbench bench $(NAME) --preset $(PRESET)

clean-runs:
	rm -rf runs reports/ci reports/default

## Refresh the lock: resolve pyproject.toml's ranges anew in a scratch venv and pin what it got
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --upgrade pip >/dev/null
	.venv-lock/bin/pip install -e '.[dev]'
	{ echo "# Exact versions the test suite is run with (CI installs with this as pip constraints)."; \
	  echo "# Refresh: make lock  (see README, 'Reproducible installs')"; \
	  echo "# Resolved on $$(uname -sm), $$(.venv-lock/bin/python -V), $$(date -u +%Y-%m-%d)."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^workbench'; } > $(LOCK)
	rm -rf .venv-lock
