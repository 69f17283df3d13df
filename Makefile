# dlpipe: `make run` and `make test` on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# Exact pins live in constraints.txt (torch==2.13.0: pip picks the CPU build on this machine).
	$(BIN)/pip install -q -c constraints.txt -e '.[worker,embedded,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	DLPIPE_PORT=$(PORT) $(BIN)/dlpipe up

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .dlpipe .pytest_cache
