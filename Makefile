# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean bench bench-e2e

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[torch,dev]'
	$(PY) -c "import jax, flax, optax, cv2, torch, pytorch_grad_cam, captum, torchcam"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaxcam demo

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxcam msdnet_flax tests benchmarks

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# jaxcam vs pytorch-grad-cam, captum, torchcam and hooks on MSD-Net, CPU (see benchmarks/).
bench: $(STAMP)
	$(PY) -m benchmarks

# End-to-end batch explain: 10,000 generated JPEGs per config through jaxcam.batch, time split
# into decode / device / write (benchmarks/e2e.py; `--n` for fewer). About 20 minutes on 2 cores.
bench-e2e: $(STAMP)
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

clean:
	rm -rf $(VENV)
