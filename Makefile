# The commands the README gives. `make test` is also what CI runs (.ci/run).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Marks a finished install. Not $(PY) itself: that is a symlink to the system's python, so
# touching it would change the system interpreter's time stamp (or fail without root).
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test unit e2e demo install quadlet check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Podman 5.4's Quadlet generator (Debian 13) and 5.8's (sid, a moving target: when it cannot be
# fetched, its tests skip with the reason).
quadlet:
	tests/tools/get-quadlet.sh trixie >/dev/null
	tests/tools/get-quadlet.sh sid >/dev/null || echo "make: no Quadlet generator from Debian sid; its tests skip" >&2

# Lint and types: ruff (style, imports, bugs) and mypy (every module of devbox/ type-checked).
check: install
	$(VENV)/bin/ruff check devbox tests bench
	$(VENV)/bin/ruff format --check devbox
	$(VENV)/bin/mypy

# Everything: the checks, unit tests, the real Quadlet generator, and the end-to-end machine
# (as root with systemd-nspawn; skipped with the reason printed otherwise).
test: install quadlet check
	$(PY) -m pytest -v -rs $(PYTEST_ARGS)

unit: install quadlet
	$(PY) -m pytest -v -rs tests/unit $(PYTEST_ARGS)

e2e: install
	$(PY) -m pytest -v -rs tests/e2e $(PYTEST_ARGS)

# See devbox do its job on a machine without systemd and Podman 5: boots a throwaway
# Debian 13 machine (systemd-nspawn), creates a drone in it, shows it, tears it down.
demo:
	tests/e2e/demo.sh

clean:
	rm -rf $(VENV) .cache build dist
