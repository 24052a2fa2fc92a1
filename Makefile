# The team's vocabulary. `make serve` and `make test` work on a fresh machine: they create
# the virtualenv and install Meter into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve console test check lint types proto proto-check client client-check ts ts-check ts-test \
	bench faults ha citus promises client-wheel clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/meter serve

# The web console on 127.0.0.1:8080, a client of the server `make serve` starts.
console: $(STAMP)
	$(BIN)/meter console

test: $(STAMP) check
	$(BIN)/pytest
	$(MAKE) ts-test

check: lint types proto-check client-check ts-check

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

# The blocking client is generated from the asyncio one (src/meter/client/_async ->
# generated/meter/client/_sync).
client: $(STAMP)
	$(BIN)/python scripts/client.py

client-check: $(STAMP)
	rm -rf /tmp/meter-client-check
	$(BIN)/python scripts/client.py /tmp/meter-client-check
	diff -r generated/meter/client/_sync /tmp/meter-client-check \
	  --exclude=__pycache__ || { echo "generated/meter/client/_sync is stale: run make client"; exit 1; }

# The TypeScript client (clients/typescript, npm package @meter/client): `make ts` regenerates
# its meter.v1 types (src/gen) after a change to protos/, `make ts-check` fails when they are
# stale, `make ts-test` builds it, tests it against a real `meter serve` and packs it. Without
# npm these skip with a message, except under CI (scripts/ts.sh).
ts: $(STAMP)
	PYTHON=$(BIN)/python scripts/ts.sh gen

ts-check: $(STAMP)
	PYTHON=$(BIN)/python scripts/ts.sh check

ts-test: $(STAMP)
	PYTHON=$(BIN)/python scripts/ts.sh test

bench: $(STAMP)
	$(BIN)/python -m bench.run

faults: $(STAMP)
	$(BIN)/pytest tests/faults

# The model-based test's long run: 10,000 random steps (METER_PROMISES_STEPS) against the model
# from a fresh seed that it prints (METER_PROMISES_SEED replays one). make test runs 300 twice.
promises: $(STAMP)
	METER_PROMISES_STEPS=$${METER_PROMISES_STEPS:-10000} $(BIN)/pytest tests/promises \
	  -k fresh -s -o timeout=0 -p no:cacheprovider

# Failover, switchover, a lost standby and a rejoin on a pg_auto_failover cluster of its own
# (Debian's packages; skipped with a message naming them when they are missing).
ha: $(STAMP)
	$(BIN)/pytest tests/ha -m ha

# Meter on a Citus cluster of its own (a coordinator and two workers): migrate, the API and
# events tests, the fault workload under SIGKILLs and shard moves, a stopped worker, no
# two-phase ledger commit (docs/scale-out.md). Citus is packaged by neither Debian nor PyPI:
# where it is not installed the tier is skipped with a message naming what is missing, unless
# METER_CITUS_REQUIRED=1 (then it fails).
citus: $(STAMP)
	$(BIN)/pytest tests/citus -m citus

# The client-only distribution (clients/python): what AI workers install instead of the server.
client-wheel: $(STAMP)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist clients/python

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
