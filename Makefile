# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install system-deps clean bench bench-e2e bench-frameworks bench-methods

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[torch,frameworks,dev]'
	$(PY) -c "import jax, flax, optax, cv2, torch, pytorch_grad_cam, captum, torchcam, equinox, haiku"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaxcam demo

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxcam msdnet_flax efficientnet_flax tests benchmarks

# The gallery's browser test drives Debian's chromium + chromium-driver: installed through apt-get
# when root, otherwise one line saying what to install.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "make test needs chromium and chromedriver: run as root, or: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi

test: lint system-deps
	$(PY) -m pytest -q -n 2 --dist loadfile

# jaxcam vs pytorch-grad-cam, captum, torchcam and hooks on MSD-Net, CPU (see benchmarks/).
bench: $(STAMP)
	$(PY) -m benchmarks

# End-to-end batch explain: 10,000 generated JPEGs per config through jaxcam.batch, time split
# into decode / device / write (benchmarks/e2e.py; `--n` for fewer). About 20 minutes on 2 cores.
bench-e2e: $(STAMP)
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

# Grad-CAM over each framework's own jitted forward, batch 16, 224 px (benchmarks/frameworks.py).
bench-frameworks: $(STAMP)
	$(PY) -m benchmarks.frameworks --md benchmarks/RESULTS.md

# Each method added for pytorch-grad-cam 1.5.7 parity (and Grad-CAM), jaxcam vs pytorch-grad-cam
# on EfficientNet-Lite0's shipped weights, batch 8, 224 px (benchmarks/methods.py).
bench-methods: $(STAMP)
	$(PY) -m benchmarks.methods --md benchmarks/RESULTS.md

clean:
	rm -rf $(VENV)
