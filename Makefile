# The team's vocabulary. `make serve` and `make test` work on a fresh machine: they create
# the virtualenv and install Meter into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test check lint types proto proto-check bench faults ha clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/meter serve

test: $(STAMP) check
	$(BIN)/pytest

check: lint types proto-check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

proto: $(STAMP)
	PYTHON=$(BIN)/python scripts/proto.sh

# Regenerate into a scratch copy and compare: generated/ must be exactly what protos/ makes.
proto-check: $(STAMP)
	rm -rf /tmp/meter-proto-check && mkdir -p /tmp/meter-proto-check
	cp -r protos scripts /tmp/meter-proto-check/
	cd /tmp/meter-proto-check && PYTHON=$(CURDIR)/$(BIN)/python scripts/proto.sh >/dev/null
	diff -r generated/meterpb /tmp/meter-proto-check/generated/meterpb \
	  --exclude=__pycache__ || { echo "generated/ is stale: run make proto"; exit 1; }

bench: $(STAMP)
	$(BIN)/python -m bench.run

faults: $(STAMP)
	$(BIN)/pytest tests/faults

# Failover, switchover, a lost standby and a rejoin on a pg_auto_failover cluster of its own
# (Debian's packages; skipped with a message naming them when they are missing).
ha: $(STAMP)
	$(BIN)/pytest tests/ha -m ha

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
