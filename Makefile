# The two commands: `make demo` runs the main job, `make test` runs the tests.
# Both call `make setup`, which is idempotent: a second run checks and changes nothing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP := $(VENV)/.slimgen-installed
export SLIMGEN_CACHE ?= $(CURDIR)/.cache/slimgen
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
CHROMEDRIVER := /usr/bin/chromedriver
DEMO_OUT ?= runs/demo

.PHONY: setup demo test lint bench clean

setup: $(STAMP) $(FMNIST)

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# torch first, from the local CPU wheel; every later install is held to it by constraints.txt
$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	@$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@if $(VENV)/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "CUDA packages were pulled in"; exit 1; fi
	touch $(STAMP)

$(FMNIST):
	@if command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || \
	  echo "warning: could not install dataset-fashion-mnist; tests that need it will skip"; \
	else echo "warning: no apt-get; set SLIMGEN_FASHION_MNIST to a folder with the Fashion-MNIST IDX files"; fi

# headless Chromium for the report's browser test (the test skips, saying why, where it is missing)
$(CHROMEDRIVER):
	@if command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null || \
	  echo "warning: could not install chromium; the browser test will skip"; \
	else echo "warning: no apt-get; the browser test will skip"; fi

demo: setup
	$(VENV)/bin/slimgen demo --out $(DEMO_OUT)

test: setup $(CHROMEDRIVER)
	$(VENV)/bin/ruff check slimgen tests bench
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check slimgen tests bench

clean:
	rm -rf $(VENV) .cache runs
