# One machine, no containers: `make run` starts the system, `make test` runs every test.
# Each target sets up its own virtualenv on a fresh machine.

PYTHON_BIN ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

DATA ?= ../shared/datasets/ham10000
# A second population trained on (flat benign/, malignant/; held out by patient as the store would).
COLLECTIONS ?= isic2020=../shared/datasets/isic2020
# Another clinic's collection (benign/, malignant/), never trained on: scored by `make train`
# and `make ablations`; it chooses nothing (docs/model.md).
EXTERNAL ?= ../shared/datasets/derm7pt
WEIGHTS ?= ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
# Clinical photographs (not dermoscopy): half train each new version's not_dermoscopy warning.
CLINICAL_PHOTOS ?= ../shared/datasets/clinical-sd198

# make train MODEL_OUT=models ships the new version (and points the production alias at it).
MODEL_OUT ?= var/models
# make evaluate DATA=<dir with benign/ and malignant/, or a dataset root: its test/>;
# MODEL_DIR=<version folder> picks a version (default: the shipped production one);
# COLLECTION=<name> judges at that collection's own threshold, as a prediction naming it is.
MODEL_DIR ?=
PRODUCTION_DIR = models/versions/$(shell sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' models/aliases/production.json)
BENCH_ARGS ?=
ABLATION_ARGS ?=
TRAIN_ARGS ?=
LOADTEST_HOST ?= http://127.0.0.1:8000
LOADTEST_USERS ?= 50
LOADTEST_TIME ?= 60s
# The browser tests drive Debian's Chromium; `make test` installs it when missing.
CHROMIUM := /usr/bin/chromium
# The Kubernetes manifest tests render with kubectl: Debian's kubernetes-client when none is installed.
KUBECTL := $(or $(shell command -v kubectl),/usr/bin/kubectl)
# The alert rules' unit tests run promtool: Debian's prometheus package when none is installed.
PROMTOOL := $(or $(shell command -v promtool),/usr/bin/promtool)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: lock images-reproducible debian-lock run test test-fast lint train ablations evaluate bench bench-trust bench-model loadtest replay-dead-letters compose-test compose-cluster-test clean

# The venvs install the locks (requirements/*.lock: every package, transitive ones included,
# pinned with its hashes), never the top-level files directly: `make lock` writes the locks
# from requirements*.txt after a version there is changed.
PIP_LOCKED := $(PYTHON) -m pip install --quiet --require-hashes --no-deps

$(VENV)/.runtime: requirements/training.lock
	test -x $(PYTHON) || $(PYTHON_BIN) -m venv $(VENV)
	$(PIP_LOCKED) -r requirements/training.lock
	$(PYTHON) -m pip check
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements/dev.lock
	$(PIP_LOCKED) -r requirements/dev.lock
	$(PYTHON) -m pip check
	touch $@

# The locks, from the human-edited requirements*.txt, for CPython 3.11 on Linux x86_64, from
# PyPI alone (--no-config: no site index or local wheels end up in them). training.lock is the
# whole runtime (requirements.txt); the others are resolved within it, so that a package has the
# same version in every lock.
UV := $(VENV)/bin/uv
LOCK_COMPILE = $(UV) pip compile --no-config --native-tls --quiet --generate-hashes --index-url https://pypi.org/simple \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(LOCK_ARGS)

# The lock tool alone, at its version in requirements-dev.txt (so that a broken lock can be rewritten).
$(UV): requirements-dev.txt
	test -x $(PYTHON) || $(PYTHON_BIN) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet "$$(grep -oE '^uv==[^ ]+' requirements-dev.txt)"
	touch $@

lock: $(UV)  ## rewrite requirements/*.lock from requirements*.txt (LOCK_ARGS=--upgrade-package NAME)
	$(LOCK_COMPILE) -o requirements/training.lock requirements.txt
	$(LOCK_COMPILE) -c requirements/training.lock -o requirements/serving.lock requirements-serving.txt
	$(LOCK_COMPILE) -c requirements/training.lock -o requirements/dev.lock requirements-dev.txt
	$(LOCK_COMPILE) -c requirements/dev.lock -o requirements/sbom.lock requirements-sbom.txt

run: $(VENV)/.runtime  ## start every service on this machine, restarting any that exits (Ctrl-C stops them)
	PYTHON=$(PYTHON) deploy/local/run.sh

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

$(KUBECTL):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null

$(PROMTOOL):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null

test: $(VENV)/.dev $(CHROMIUM) $(KUBECTL) $(PROMTOOL)  ## lint, then the whole test suite (needs RabbitMQ on 127.0.0.1:5672)
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest

# The markers say what a test needs (pyproject.toml, tests/support/tiers.py); this tier needs
# RabbitMQ on 5672, SeaweedFS's `weed`, kubectl and promtool, and runs in under 3 minutes on 2 cores.
FAST_TESTS := not (slow or system or servers or faults or browser)

test-fast: $(VENV)/.dev $(KUBECTL) $(PROMTOOL)  ## lint, then the unit and in-process tests: no browser, no services as processes, no training
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest -m "$(FAST_TESTS)"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

train: $(VENV)/.runtime  ## train, evaluate and export a model version into $(MODEL_OUT)
	$(PYTHON) -m services.trainer train --data $(DATA) --weights $(WEIGHTS) --out $(MODEL_OUT) --promote \
		$(foreach collection,$(COLLECTIONS),--collection $(collection)) \
		$(if $(wildcard $(EXTERNAL)/malignant),--external $(EXTERNAL)) \
		$(if $(wildcard $(CLINICAL_PHOTOS)/benign),--clinical-photos $(CLINICAL_PHOTOS)) $(TRAIN_ARGS)

ablations: $(VENV)/.runtime  ## training recipes scored on HAM10000 validation and EXTERNAL (~10 min a recipe)
	$(PYTHON) -m bench.recipe_ablations --data $(DATA) --external $(EXTERNAL) --weights $(WEIGHTS) $(ABLATION_ARGS)

evaluate: $(VENV)/.runtime  ## score the shipped production model on DATA; last line is JSON
	$(PYTHON) -m services.trainer evaluate --data $(DATA) $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) \
		$(if $(COLLECTION),--collection $(COLLECTION))

bench: $(VENV)/.dev  ## end-to-end and raw model throughput (needs RabbitMQ); prints ratios
	$(PYTHON) -m bench.end_to_end $(BENCH_ARGS)

bench-trust: $(VENV)/.dev  ## out-of-domain warnings, worker cost, heat map and drift of the shipped model (~5 min)
	$(PYTHON) -m bench.trust $(BENCH_ARGS)

bench-model: $(VENV)/.dev  ## Keras vs ONNX Runtime vs LiteRT (and int8, TTA) on this machine, ~10 min
	$(PYTHON) -m bench.model_runtimes --model-dir $(PRODUCTION_DIR) --data $(DATA) --tta

loadtest: $(VENV)/.dev  ## locust against a running system at LOADTEST_HOST
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless -u $(LOADTEST_USERS) -r 10 -t $(LOADTEST_TIME) \
		--host $(LOADTEST_HOST)

replay-dead-letters: $(VENV)/.runtime  ## move dead prediction jobs back to the queue (after fixing the cause)
	$(PYTHON) -m services.worker replay-dead-letters

debian-lock:  ## rewrite deploy/images/*/debian.lock (the Debian packages of the air-gapped images) from the mirror
	deploy/images/debian-base.sh
	deploy/images/debian-lock.sh

# TARGET=trainer, or DOCKERFILE=deploy/images/rabbitmq/Dockerfile TARGET= for another image.
images-reproducible:  ## build an image twice (the second with --no-cache) and compare their SBOMs' package lists
	deploy/images/build-bases.sh
	deploy/images/sbom-compare.sh

compose-test:  ## build the images, start the stack in Docker, check and scale it, remove it; last line JSON
	$(PYTHON_BIN) deploy/compose/compose_test.py

compose-cluster-test:  ## the stack on a 3-node RabbitMQ cluster in Docker, a node killed under load; last line JSON
	$(PYTHON_BIN) deploy/compose/compose_cluster_test.py

clean:
	rm -rf var test-output .pytest_cache
