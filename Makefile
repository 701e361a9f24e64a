# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both install everything into a local virtualenv (.venv) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install graphviz generators lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed graphviz

# Graphviz's `dot` program renders the diagrams (svg/png/pdf); .dot output works without it.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Graphviz (dot) with apt-get"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "NOTE: Graphviz 'dot' is missing; install the 'graphviz' system package for SVG/PNG/PDF diagrams (e.g. sudo apt-get install graphviz)."; \
	  fi; }

demo: install
	$(VENV)/bin/spdnn demo -o out/demo

test: install
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

generators: $(VENV)/.installed
	$(PY) -m spdnn.codegen.regenerate

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check spdnn tests benchmarks

clean:
	rm -rf out .pytest_cache
