# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# System packages are installed when we are root; otherwise the exact apt-get line is printed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
EJX    := $(BIN)/ejx
# Debian packages the tests need: xmlsec1 (independent signature checks), Chromium (dashboard test),
# OpenSSL's GOST engine and CLI (GOST R 34.10-2012 signatures, checked against `openssl -engine gost`).
# PostgreSQL's server is installed by `ejx infra up` itself when missing.
APT_TEST := xmlsec1 chromium chromium-driver libengine-gost-openssl openssl

.PHONY: demo test setup infra down bench chaos test-deps clean

demo: setup
	$(EJX) demo

test: setup test-deps
	$(BIN)/pytest -q -p no:cacheprovider tests

setup: $(VENV)/.installed infra
	@bash .ci/apt-install libengine-gost-openssl

$(VENV)/.installed: pyproject.toml
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# A medium chaos run on a Kafka and a PostgreSQL of its own (never the shared ones): 12,000 events at 50/s,
# a seeded SIGKILL every 10 s of ingest, router, relay, smev, Kafka or PostgreSQL; exit 1 on any loss, doubling
# or refused envelope.
chaos: $(VENV)/.installed
	$(EJX) chaos --rate 50 --seconds 240 --every 10 --seed 1 --json chaos.json

test-deps:
	@bash .ci/apt-install $(APT_TEST)

infra: $(VENV)/.installed
	$(EJX) infra up
	$(EJX) db migrate

down:
	$(EJX) infra down

bench: setup
	$(BIN)/python -m bench

clean: down
	rm -rf .ejx $(VENV)
