# One machine, no containers: `make run` starts the system, `make test` runs every test.
# Each target sets up its own virtualenv on a fresh machine.

PYTHON_BIN ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

DATA ?= ../shared/datasets/ham10000
WEIGHTS ?= ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5

.PHONY: run test lint bench loadtest clean

$(VENV)/.runtime: requirements.txt
	test -x $(PYTHON) || $(PYTHON_BIN) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime  ## start gateway and worker on this machine (Ctrl-C stops them)
	PYTHON=$(PYTHON) deploy/local/run.sh

test: $(VENV)/.dev  ## lint, then the whole test suite (needs RabbitMQ on 127.0.0.1:5672)
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var test-output .pytest_cache
