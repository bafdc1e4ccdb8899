# prunet — `make demo` and `make test` set everything up on a fresh machine.
# The venv lives outside the clone so that CI's fresh clones and later sessions reuse it; it is
# rebuilt only when the dependency list (this file or pyproject.toml) changes.
PYTHON ?= python3
CACHE_DIR ?= $(or $(PRUNET_CACHE),$(HOME)/.cache/prunet)
VENV ?= $(CACHE_DIR)/venv-py311
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEPS_HASH := $(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
STAMP := $(VENV)/.deps-$(DEPS_HASH)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup setup-detection fashion-mnist demo test test-fast clean-venv

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools==80.9.0" wheel
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q $(TORCH_PINS) -e '.[export,dev]'
	rm -f $(VENV)/.deps-*
	touch $(STAMP)

setup: $(STAMP) fashion-mnist
	@# Re-point the editable install at this checkout (CI clones into a fresh folder each time).
	$(PIP) install -q --no-deps --no-build-isolation -e .

# The search, resume, DDP, train and pipeline tests need the Debian package and skip without it.
# On a laptop a note is enough; under CI=true a run that would skip them all must fail instead of
# passing with nothing tested.
fashion-mnist:
	@test -f $(FASHION_MNIST) || apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || true
	@if test -f $(FASHION_MNIST); then :; \
	elif [ "$(CI)" = "true" ] || [ "$(CI)" = "1" ]; then \
	  echo "error: CI=$(CI): Debian package dataset-fashion-mnist could not be installed ($(FASHION_MNIST) missing); the search, resume, DDP, train and pipeline tests would all be skipped" >&2; exit 1; \
	else \
	  echo "note: could not install Debian package dataset-fashion-mnist; Fashion-MNIST tests will skip (under CI=true this fails)"; \
	fi

setup-detection: setup
	bash detection/install_mmcv.sh $(PY)

demo: setup
	$(PY) -m prunet.cli demo

test: setup setup-detection
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not detection" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
