# rawepoll -- everything starts from a fresh virtual environment in .venv.
#   make demo   set up, then the main job: the binding next to select.epoll, rawepoll serve
#               under rawepoll bench (every byte verified), rawepoll compare --quick
#   make test   set up, then ruff, mypy (strict) and the whole test suite (three pytest-xdist
#               workers, see addopts in pyproject.toml; PYTEST_ARGS='-n 0' runs it in one process)
#   make bench  rawepoll compare: wait scaling and binding cost against select/poll/epoll,
#               then the echo servers' CPU per message, memory per idle connection and accept
#               rate against selectors, asyncio and uvloop (results in bench-results/)
#   make c1m    one million connections in a private network namespace (root), measured
#   make docs   the Sphinx site into docs/_build/html, warnings are errors
#   make fuzz   bounded-time fuzzing of the binding and the server's handler path
#   make soak   10 minutes of mixed load against a 2-worker server; drift and mismatches
#   make chaos  SIGKILL random workers under load; connections lost per kill, recovery
#   make flood  slowloris and a connect flood beyond --max-conns; p99 before/during

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean venv c1m docs fuzz soak chaos flood dist

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The tests run the load generator, the peers (uvloop among them) and the
# comparison end to end, and build the docs site, so they get every extra.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,bench,docs]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m rawepoll demo

lint: $(STAMP)
	$(VENV)/bin/ruff check rawepoll tests bench examples hardening docs/conf.py
	$(VENV)/bin/ruff format --check rawepoll tests bench examples hardening docs/conf.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m rawepoll compare --out bench-results

c1m: $(STAMP)
	$(PY) -m rawepoll c1m

docs: $(STAMP)
	$(PY) -m sphinx -W -n --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(PY) -m hardening.fuzz --seconds $(FUZZ_SECONDS)

SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(PY) -m hardening.soak --seconds $(SOAK_SECONDS)

chaos: $(STAMP)
	$(PY) -m hardening.chaos

flood: $(STAMP)
	$(PY) -m hardening.flood

dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist
	$(VENV)/bin/twine check --strict dist/*

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info docs/_build
