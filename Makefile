# ferroloop's commands. `make demo` and `make test` are the two a newcomer needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements-dev.txt | cut -c1-12)
# cargo test links libpython: use the venv's interpreter for it.
export PYO3_PYTHON := $(abspath $(PY))
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
# In `make test` a ferroloop that fails to import is an error, never a skip.
export FERROLOOP_REQUIRED := 1

.PHONY: demo test build-dev build-prod build-profiling cargo-test pytest pytest-debug \
	conformance conformance-update lint format bench bench-quick bench-echo bench-tls bench-http \
	bench-chart loadgen clean \
	test-pythons fuzz storm

$(STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

build-dev: $(STAMP)
	$(VENV)/bin/maturin develop -q

build-prod: $(STAMP)
	$(VENV)/bin/maturin develop -q --release

build-profiling: $(STAMP)
	$(VENV)/bin/maturin develop -q --profile profiling

## demo: fresh clone -> .venv, release build, run the examples, short benchmark.
demo: build-prod
	$(PY) examples/run_all.py
	$(PY) bench/micro.py --quick --markdown

## test: every test. Exit codes other than 0 fail, pytest's 5 (no tests) included.
test: build-prod cargo-test pytest pytest-debug conformance test-pythons
test: test-wheel

cargo-test: $(STAMP)
	cargo test --quiet
	cargo test --quiet -p ferroloop-loadgen
	cargo test --quiet -p ferroloop-echo-limit

pytest: build-prod
	$(PYTEST) tests

# The suite again in asyncio's debug mode, as uvloop does, plus -X dev once.
pytest-debug: build-prod
	PYTHONASYNCIODEBUG=1 $(PYTEST) tests
	$(PY) -X dev -m pytest -q -p no:cacheprovider tests/test_debug.py

# The same suite on the other installed CPythons (3.10-3.13), each in .venv-3.X.
test-pythons: build-prod
	scripts/test_other_pythons.sh

# The fd-reuse storm (issue 17 §1) at length: asyncio, uvloop and ferroloop, each in its own
# process, one row each (connections, fd numbers reused under pending work, misdelivered
# bytes, timeouts...). Stops at the connection count or the time limit, whichever comes first.
# Fails if any loop misdelivers a byte, reports a send done whose bytes its peer never got,
# or leaves a task, transport or socket behind. `make storm STORM_ARGS="--seconds 30 --seed 3"`.
STORM_ARGS ?= --connections 50000 --seconds 120
storm: build-prod
	$(PY) tests/test_fd_storm.py --loop asyncio,uvloop,ferroloop $(STORM_ARGS)

conformance: build-prod
	$(PY) tests/cpython/conformance.py --check

## fuzz: the bad-argument fuzzing and the scheduler's differential fuzzing against asyncio,
## with many examples (`make test` runs a bounded profile).
fuzz: build-prod
	HYPOTHESIS_PROFILE=long $(PYTEST) tests/test_fuzz_args.py tests/test_fuzz_scheduler.py

# AddressSanitizer (nightly rustc, -Zsanitizer=address, libasan preloaded) over the pytest
# suite, in .venv-asan; LeakSanitizer's reports fail it unless tests/sanitizers/lsan.supp
# lists them. `make sanitize SANITIZE_TESTS=tests/test_timers.py` for a subset.
.PHONY: sanitize
sanitize: $(STAMP)
	SANITIZE_TESTS="$(SANITIZE_TESTS)" scripts/sanitize.sh

# valgrind's memcheck over a few test files (ferroloop's runs), in .venv-valgrind.
.PHONY: valgrind
valgrind: $(STAMP)
	VALGRIND_TESTS="$(VALGRIND_TESTS)" scripts/valgrind.sh

conformance-update: build-prod
	$(PY) tests/cpython/conformance.py --update

lint: $(STAMP)
	cargo fmt --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests examples bench
	$(VENV)/bin/ruff format --check python tests examples bench
	$(PY) -m mypy.stubtest ferroloop._ferroloop
	$(PY) -m mypy --strict -p ferroloop
	$(PY) -m mypy --strict tests/typecheck
	$(PY) scripts/check_rust_version.py

format: $(STAMP)
	cargo fmt
	$(VENV)/bin/ruff format python tests examples bench
	$(VENV)/bin/ruff check --fix python tests examples bench

# The echo suite's load generator (bench/loadgen) and its plain-Rust echo server, the
# `limit` row (bench/limit): Rust workspace members.
loadgen:
	cargo build --release --quiet -p ferroloop-loadgen -p ferroloop-echo-limit

# The benchmarks run in their own venv, .venv-bench: .venv's interpreter, a release wheel
# of ferroloop (built from the checkout on every run; .venv's editable install is left
# alone) and the comparison loops. A loop that does not install (no wheel for this Python
# and no toolchain to build one) is reported and skipped, and the suites skip it too.
# They are installed once: `rm -rf .venv-bench` to try again or upgrade.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_LOOPS := uvloop rloop rsloop veloxloop
BENCH_STAMP := $(BENCH_VENV)/.installed-loops
BENCH_WHEEL := target/bench-wheel

$(BENCH_STAMP): bench/requirements.txt | $(STAMP)
	test -x $(BENCH_PY) || "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -r bench/requirements.txt
	@for loop in $(BENCH_LOOPS); do \
		if timeout 900 $(BENCH_PY) -m pip install -q --prefer-binary $$loop \
			>$(BENCH_VENV)/pip-$$loop.log 2>&1; then \
			echo "bench-venv: $$loop installed"; \
		else \
			echo "bench-venv: $$loop did not install, skipped (see $(BENCH_VENV)/pip-$$loop.log)"; \
		fi; \
	done
	touch $@

.PHONY: bench-venv
bench-venv: $(BENCH_STAMP) $(STAMP)
	rm -rf $(BENCH_WHEEL)
	$(VENV)/bin/maturin build -q --release --interpreter $(BENCH_PY) -o $(BENCH_WHEEL)
	$(BENCH_PY) -m pip install -q --force-reinstall --no-deps $(BENCH_WHEEL)/ferroloop-*.whl

bench-quick: bench-venv loadgen
	$(BENCH_PY) bench/micro.py --quick --markdown
	$(BENCH_PY) bench/echo.py --quick --markdown
	$(BENCH_PY) bench/echo.py --http --quick --markdown

# Micro, echo and http 7 rounds each (the README's figures rest on at least 7), TLS echo 9
# (its 64-connection rows vary most from round to round), memory 7 (a prerequisite: it runs
# first). Micro: every loop that imports; echo and TLS echo: asyncio, ferroloop, uvloop,
# rloop and (plain echo) the limit server (bench/README.md says why); http: every loop. Then
# the README's chart and its summary table. About 40 minutes on 2 CPUs.
bench: bench-venv loadgen
	$(BENCH_PY) bench/micro.py --rounds 7 --markdown --json bench/results/micro.json --readme docs/benchmarks.md
	$(BENCH_PY) bench/echo.py --rounds 7 --markdown --syscalls --json bench/results/echo.json --readme docs/benchmarks.md
	$(BENCH_PY) bench/echo.py --http --rounds 7 --markdown --json bench/results/http.json --readme docs/benchmarks.md
	$(BENCH_PY) bench/echo.py --tls --rounds 9 --markdown --json bench/results/echo-tls.json --readme docs/benchmarks.md
	$(MAKE) bench-chart
	$(MAKE) bench-summary

bench-http: bench-venv loadgen
	$(BENCH_PY) bench/echo.py --http --rounds 7 --markdown --json bench/results/http.json --readme docs/benchmarks.md

# Server memory per idle connection (bench/memory.py): a Protocol echo server holding
# 10,000 idle loopback connections on asyncio, ferroloop, uvloop and rloop, 7 interleaved
# rounds, about a minute; `make bench` and `make bench-quick` (2,000 connections) run it.
.PHONY: bench-memory
bench-memory: bench-venv
	$(BENCH_PY) bench/memory.py --rounds 7 --markdown --json bench/results/memory.json --readme docs/benchmarks.md

.PHONY: bench-memory-quick
bench-memory-quick: bench-venv
	$(BENCH_PY) bench/memory.py --quick --markdown

bench: bench-memory
bench-quick: bench-memory-quick

# The README's chart, from whichever suites' results are in bench/results.
bench-chart: $(BENCH_STAMP)
	$(BENCH_PY) bench/chart.py --out bench/results/bench.png $(wildcard $(addprefix bench/results/,micro.json echo.json http.json echo-tls.json))

# The README's "How fast" table (between its bench:summary markers) from bench/results'
# micro, echo, http and memory files: a few rows of each with their spread, and the micro
# suite's loop-owned geomean (bench/summary.py). `make bench` runs it last.
.PHONY: bench-summary
bench-summary: $(BENCH_STAMP)
	$(BENCH_PY) bench/summary.py --readme README.md

bench-echo: bench-venv loadgen
	$(BENCH_PY) bench/echo.py --rounds 7 --markdown --syscalls --json bench/results/echo.json --readme docs/benchmarks.md

bench-tls: bench-venv loadgen
	$(BENCH_PY) bench/echo.py --tls --rounds 9 --markdown --json bench/results/echo-tls.json --readme docs/benchmarks.md

## bench-stats-overhead: what the loop's counting (loop.stats()) costs: this checkout built
## with and without it (`--features no-stats`), alternated on the micro rows and the echo
## suite's Protocol TCP rows (bench/stats_overhead.py; two release builds, then about 5 minutes).
.PHONY: bench-stats-overhead
bench-stats-overhead: $(STAMP) loadgen
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) bench/stats_overhead.py --pairs 6 --micro-rounds 3

clean:
	cargo clean
	rm -rf $(VENV) .venv-3.* .venv-bench .venv-asan .venv-valgrind dist

# Portable wheels (issue 19): `make wheels` puts an sdist and, built from it, a
# manylinux2014 (glibc 2.17+) x86_64 wheel per CPython 3.10-3.13 installed in dist/;
# each is checked by `auditwheel show` and imported by its own interpreter.
# `make wheels-aarch64` cross-builds the aarch64 wheels beside them (zig; rustup must
# be able to add the target's standard library). scripts/build_wheels.sh says more.
WHEELS_STAMP := $(VENV)/.wheels-$(shell sha1sum requirements-wheels.txt | cut -c1-12)

$(WHEELS_STAMP): requirements-wheels.txt | $(STAMP)
	$(PY) -m pip install -q -r requirements-wheels.txt
	rm -f $(VENV)/.wheels-* && touch $@

.PHONY: wheels
wheels: $(WHEELS_STAMP)
	scripts/build_wheels.sh x86_64

.PHONY: wheels-aarch64
wheels-aarch64: $(WHEELS_STAMP)
	rustup target add aarch64-unknown-linux-gnu
	scripts/build_wheels.sh aarch64

# The release wheel for .venv's Python, installed into a fresh venv with no Rust on
# PATH, run from outside the checkout: the examples and a smoke subset of the tests.
.PHONY: test-wheel
test-wheel: build-prod
	scripts/test_wheel.sh

## compat: the ecosystem's released test suites (uvloop, anyio, aiohttp, uvicorn...) on asyncio,
## uvloop and ferroloop; sdists from PyPI into target/compat/. Long (see tests/compat/README.md).
## compat-check, in `make test`: a subset on ferroloop only, failing on any lost tracked pass.
.PHONY: compat compat-update compat-check
COMPAT_ARGS ?=
compat: build-prod
	$(PY) tests/compat/compat.py --check $(COMPAT_ARGS)

compat-update: build-prod
	$(PY) tests/compat/compat.py --update $(COMPAT_ARGS)

compat-check: build-prod
	$(PY) tests/compat/compat.py --quick

test: compat-check

# Issue 18 §2's soak: every kind of traffic (TCP, Unix, TLS, UDP, pipes, subprocesses,
# timers, executor) on one loop for SOAK_SECONDS, RSS, fds, tracemalloc and the loop's counts
# sampled each 10 s; fails on growth beyond the bounds in tests/support/soak.py (a fitted
# slope after the warm-up). asyncio, uvloop and ferroloop, each in its own process, one
# table row each. `make test` runs the 60 s version once, on ferroloop (soak-short).
.PHONY: soak soak-short
SOAK_SECONDS ?= 600
SOAK_ARGS ?=
soak: build-prod
	$(PY) tests/test_soak.py --loop asyncio,uvloop,ferroloop --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

soak-short: build-prod
	FERROLOOP_SOAK=1 $(PYTEST) tests/test_soak.py

test: soak-short

# Issue 18 §2's stress: 10,000 connections held, 1,000,000 connect/close cycles, slow readers
# at the water marks, resets mid-write, EMFILE on accept, 100,000 timers cancelled at random,
# signals from threads during traffic (tests/support/stress.py). asyncio, uvloop and
# ferroloop, each in its own process, one table row per scenario and loop.
# `make stress STRESS_ARGS="--churn 200000"`. `make test` runs the short sizes once
# (stress-short), on asyncio and ferroloop.
.PHONY: stress stress-short
STRESS_ARGS ?=
stress: build-prod
	$(PY) tests/test_stress.py --loop asyncio,uvloop,ferroloop $(STRESS_ARGS)

stress-short: build-prod
	FERROLOOP_STRESS=1 $(PYTEST) tests/test_stress.py

test: stress-short
