# rawepoll -- everything starts from a fresh virtual environment in .venv.
#   make demo   set up, then the main job: the binding next to select.epoll, rawepoll serve
#               under rawepoll bench (every byte verified), rawepoll compare --quick
#   make test   set up, then ruff, mypy (strict) and the whole test suite
#   make bench  rawepoll compare: wait scaling and binding cost against select/poll/epoll,
#               then the echo servers' CPU per message, memory per idle connection and accept
#               rate against selectors, asyncio and uvloop (results in bench-results/)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The tests run the load generator, the peers (uvloop among them) and the
# comparison end to end, so they get the bench extra too.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m rawepoll demo

lint: $(STAMP)
	$(VENV)/bin/ruff check rawepoll tests bench examples
	$(VENV)/bin/ruff format --check rawepoll tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m rawepoll compare --out bench-results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
