# Quick start: `make demo` runs PULSE on the bundled model; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, so that the package's plain `torch` requirement is already met: the CPU
	# build from PyTorch's CPU index on Linux without an NVIDIA GPU (TORCH_BUILD=cpu|cuda
	# to choose), the plain wheel where that index cannot be reached (scripts/install_torch.py).
	$(PY) scripts/install_torch.py --version 2.13.0
	$(PIP) install -q -e '.[test,align]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(VENV)/bin/pulse demo --out demo-output

bench: $(STAMP)
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
