# The two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test conformance lint docs tools venv clean bench bench-smoke bench-rss bench-uploads bench-transfer

# A virtualenv with the pinned dependencies; rebuilt when a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e .
	touch $@

venv: $(VENV)/.installed

# Real clients (crane, oras, regctl, skopeo) and the OCI conformance suite.
tools:
	bash tests/tools/install.sh

run: venv
	$(PY) -m chalicelib.devserver

test: venv tools
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests --junitxml=test-results/junit.xml
	$(MAKE) --no-print-directory conformance
	$(MAKE) --no-print-directory bench-smoke

# Every benchmark section, written to BENCHMARKS.md and bench/benchmarks.png.
bench: venv tools
	$(PY) bench/run.py

# The same harness at toy sizes (seconds), so it cannot rot; reports go to test-results/.
bench-smoke: venv tools
	$(PY) bench/run.py --quick

# The OCI conformance suite twice: the local door, and app.py behind the API
# Gateway stand-in with function limits on. Both run; either failing fails.
conformance: venv tools
	$(PY) -m tests.conformance; a=$$?; $(PY) -m tests.conformance --door lambda; b=$$?; \
	test $$a -eq 0 -a $$b -eq 0

# Peak RSS of the registry process while a 1 GiB blob is pushed in one PATCH.
bench-rss: venv
	$(PY) bench/rss_push.py --size-mib 1024

# Digest verification speed (vs hashlib) and the AWS requests of every upload step.
bench-uploads: venv
	$(PY) bench/verify.py
	$(PY) bench/aws_requests.py

# Push and pull of a 1 GiB blob: the client beside s3transfer and crane.
bench-transfer: venv tools
	$(PY) bench/transfer.py --size-mib 1024

lint: venv
	$(PY) -m ruff check .

docs: venv
	$(PY) -m chalicelib.core.apidoc > docs/api.md

clean:
	rm -rf $(VENV) .tools test-results .pytest_cache .ruff_cache
