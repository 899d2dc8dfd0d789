# NDCL developer entry points. Every target creates .venv and installs what it needs, so each
# works on a fresh machine (Python 3.10+ with venv; see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_INPUT := data/demo/c4-demo.00000-of-00001.json.gz
DEMO_OUTPUT ?= demo-out

.PHONY: install demo test lint bench clean flink

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the bundled corpus with the embedded defaults: DirectRunner (FnApiRunner),
# a local Ray head + K-Means service started and stopped by the run, ND→CL.
demo: $(STAMP)
	$(BIN)/ndcl run --workflow nd_cl --input $(DEMO_INPUT) --output $(DEMO_OUTPUT)

# scripts/test_services.sh installs the Debian packages the suite needs (as root with apt),
# starts a throwaway PostgreSQL server, runs the command with NDCL_TEST_PG_URL exported and
# stops the server whatever the command's outcome, exiting with the command's status.
test: $(STAMP)
	bash scripts/test_services.sh run -- \
		sh -c '$(BIN)/ruff check . && $(BIN)/python -m pytest -q -rs tests'

# Beam's Flink job server (assembled with Maven) and a Flink distribution (from PyPI) into
# .ndcl/flink/ ($$NDCL_FLINK_DIR) for --runner flink; see runners/flink/README.md. Needs Java 11+
# and Maven; install, demo and test do not (tests/test_flink.py skips without them).
flink: $(STAMP)
	$(BIN)/python -m runners.flink.dist fetch

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/nd_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT) .pytest_cache .ruff_cache *.egg-info
