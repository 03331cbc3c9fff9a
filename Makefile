# Two commands on a fresh clone: `make demo` runs the demo, `make test` the test suite.
#
# Each first makes sure .venv holds pyscheduler with its test extras: created when missing,
# re-installed when setup.cfg (or setup.py) is newer than the stamp of the last install.
# Everything goes into .venv, so a system Python that refuses `pip install` (PEP 668) is fine.
#
#   make test ARGS='-m "not slow"'     ARGS go to pytest (here: skip the multi-process tests)
#   make demo ARGS='--duration 5'       ... or to the demo
#   make lint                         ruff and mypy, as CI runs them
#   make faults                       the fault suite in full: 3 runs of each scenario, longer

PYTHON ?= python3
VENV ?= .venv
ARGS ?=

venv_python := $(VENV)/bin/python
stamp := $(VENV)/.installed

.PHONY: help demo test lint faults

help:
	@echo "make demo    run the demo (15 s on the in-memory backend)"
	@echo "make test    run the test suite (ARGS='-m \"not slow\"' for a quick run)"
	@echo "make lint    ruff and mypy"
	@echo "make faults  the fault-injection suite in full (3 runs of each scenario)"
	@echo "Each sets up $(VENV) first when needed."

demo: $(stamp)
	$(venv_python) -m pyscheduler demo $(ARGS)

test: $(stamp)
	$(venv_python) -m pytest $(ARGS)

# The CI-sized fault suite runs with the others (`make test`); this is the full one.
faults: $(stamp)
	PYSCHEDULER_FAULT_RUNS=3 $(venv_python) -m pytest tests/faults -m faults $(ARGS)

lint: $(stamp)
	$(venv_python) -m ruff check pyscheduler tests benchmarks
	$(venv_python) -m mypy pyscheduler

# A venv that failed half-way (Debian without python3-venv leaves one without pip) is removed,
# or the next run would take it for a good one.
$(venv_python):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "$(PYTHON) -m venv failed; on Debian or Ubuntu: apt-get install python3-venv" >&2; \
	    exit 1; }

# uWSGI compiles from source (it needs a C compiler and the Python headers); without it only
# the uWSGI tests are skipped, so a failed build is noted and set-up goes on.
$(stamp): setup.cfg setup.py | $(venv_python)
	$(venv_python) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(venv_python) -m pip install --quiet --disable-pip-version-check uwsgi \
	    >$(VENV)/uwsgi-build.log 2>&1 \
	    || echo "uWSGI did not build (see $(VENV)/uwsgi-build.log): its tests will be skipped"
	touch $@
