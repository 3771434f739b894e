# maestro — the two commands of the README (`make demo`, `make test`) set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,bench,distributed
PYTEST_ARGS ?=

.PHONY: install demo test bench clean check-cpu lint-imports

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@$(MAKE) --no-print-directory check-cpu
	touch $(STAMP)

# The torch pin must hold: no CUDA wheels in the environment.
check-cpu:
	@if $(PIP) list 2>/dev/null | grep -qi nvidia; then \
	  echo "error: CUDA (nvidia) packages found in $(VENV): the torch pin leaked" >&2; exit 1; fi

demo: $(STAMP)
	$(PY) -m maestro.demo

# The layers of DESIGN.md are a contract (pyproject.toml, [tool.importlinter]): checked before the tests.
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
