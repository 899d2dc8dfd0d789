# NDCL developer entry points. Every target creates .venv and installs what it needs, so each
# works on a fresh machine (Python 3.10+ with venv; see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_INPUT := data/demo/c4-demo.00000-of-00001.json.gz
DEMO_OUTPUT ?= demo-out

.PHONY: install bytecode demo test test-fast lint bench clean flink prism

# The editable install builds the C feature kernel (transforms/_feature_kernel.c) in place,
# so a change to it reinstalls too.
$(STAMP): setup.py constraints.txt transforms/_feature_kernel.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import transforms._feature_kernel"
	touch $(STAMP)

install: $(STAMP) bytecode

# Bytecode of the project's own modules, which an editable install does not compile: where
# PYTHONDONTWRITEBYTECODE is set (as on the machines this was built on) every `ndcl` run would
# otherwise compile them again (about 0.15 s of each run's start-up; 0.27 s for all of them).
# compileall rewrites only the stale files.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q beam_pipeline transforms runners benchmarks >/dev/null

# The main job on the bundled corpus with the embedded defaults: DirectRunner (FnApiRunner),
# a local Ray head + K-Means service started and stopped by the run, ND→CL.
demo: $(STAMP) bytecode
	$(BIN)/ndcl run --workflow nd_cl --input $(DEMO_INPUT) --output $(DEMO_OUTPUT)

# scripts/test_services.sh installs the Debian packages the suite needs (as root with apt),
# starts a throwaway PostgreSQL server, runs the command with NDCL_TEST_PG_URL exported and
# stops the server whatever the command's outcome, exiting with the command's status.
# The Flink tests need `make flink` (Java 11+ and Maven) and the Prism tests `make prism` (Go):
# run here whenever the tools are on PATH, so that CI runs them; without, the tests skip.
test: $(STAMP) bytecode
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory flink; \
	else echo "make test: no java/mvn on PATH: the Flink tests will skip"; fi
	@if command -v go >/dev/null 2>&1; then $(MAKE) --no-print-directory prism; \
	else echo "make test: no go on PATH: the Prism tests will skip"; fi
	bash scripts/test_services.sh run -- \
		sh -c '$(BIN)/ruff check . && $(BIN)/lint-imports && $(BIN)/python -m pytest -q -rs tests'

# The quick loop while editing (about 1 min 45 s of tests here): lint, layers, and the
# pure-function and transform tests (TestPipeline on the FnApiRunner) of tests/transforms,
# tests/beam_pipeline and the JAX K-Means; no services, Flink, Prism or end-to-end runs
# (tests/end_to_end), nor the `ndcl show` / `ndcl report` tests, which run the CLI first.
FAST_TESTS := tests/transforms tests/beam_pipeline tests/benchmarks tests/runners/kmeans/test_jax_kmeans.py \
	tests/runners/kmeans/test_lloyd.py tests/runners/kmeans/test_balanced.py \
	--ignore=tests/beam_pipeline/test_show.py --ignore=tests/beam_pipeline/test_report.py
test-fast: $(STAMP) bytecode
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" $(FAST_TESTS)

# Beam's Flink job server (assembled with Maven) and a Flink distribution (from PyPI) into
# .ndcl/flink/ ($$NDCL_FLINK_DIR) for --runner flink and runners/flink/cluster.sh; see
# runners/flink/README.md. Needs Java 11+ and Maven; install and demo do not.
flink: $(STAMP)
	$(BIN)/python -m runners.flink.dist fetch

# Beam's Prism runner (a Go binary) built with `go install` at the SDK's Beam version into
# .ndcl/prism/bin/ ($$NDCL_PRISM_DIR) for --runner prism; see runners/prism.py. Needs Go 1.26+
# and the Go module proxy (first build ~2.5 min, ~110 MB of modules); install and demo do not.
prism: $(STAMP)
	$(BIN)/python -m runners.prism install

# ruff, and the layers of pyproject.toml's [tool.importlinter] (transforms import neither
# beam_pipeline nor runners; nothing in the job's path imports db/evaluate/report; no cycles).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP) bytecode
	$(BIN)/python benchmarks/nd_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT) .pytest_cache .ruff_cache *.egg-info
