# rawepoll -- everything starts from a fresh virtual environment in .venv.
#   make demo   set up, then show the binding next to select.epoll on loopback
#   make test   set up, then ruff, mypy (strict) and the whole test suite
#   make bench  micro-benchmarks against select.epoll/poll/select (ratios), then the echo
#               server's CPU per message and memory per idle connection against its peers

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed-dev

demo: $(VENV)/.installed-bench
	$(PY) -m rawepoll demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check rawepoll tests bench examples
	$(VENV)/bin/ruff format --check rawepoll tests bench examples

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed-dev
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed-bench
	$(PY) bench/micro.py
	$(PY) bench/scaling.py
	$(PY) bench/echo.py
	$(PY) bench/memory.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
