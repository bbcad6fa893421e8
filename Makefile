# Pylon's entry points. Each target installs what it needs on a fresh machine
# (virtualenv, engine wheel, wasm tools) into the cache folder outside the
# clone, ~/.cache/pylon by default (PYLON_CACHE_DIR overrides).
RUN := scripts/in-venv

.PHONY: help install setup demo test test-engine bench bench-supply-chain bench-choosing lint clean-cache

help:
	@echo "make demo    build everything and run the examples (first run: ~15 min, mostly compiling wasmtime)"
	@echo "make test    build everything and run the test suite (engine unit tests, then pytest)"
	@echo "make bench   run the benchmarks (prints ratios)"
	@echo "make bench-supply-chain   registry pulls, signature checks, pinned packages, Dask runs"
	@echo "make bench-choosing       composectl bench for crc32c, zstd, sqlite (docs/choosing.md)"
	@echo "make lint    ruff, mypy --strict and stubtest on the Python; cargo fmt/clippy on the engine"

install:
	@scripts/bootstrap.sh > /dev/null

setup: install
	$(RUN) composectl setup

demo: setup
	$(RUN) bash examples/demo.sh

test: setup test-engine
	$(RUN) python -m pytest -q

# The engine's own unit tests (compile cache, limiter, the adapter patch), on real
# wasmtime. patch-crates.sh: engine/Cargo.toml's [patch] needs its symlinks.
test-engine: install
	scripts/patch-crates.sh
	cd engine && CARGO_TARGET_DIR="$${PYLON_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/pylon}/cargo-target" \
		RUST_BACKTRACE= cargo test --quiet

bench: setup
	$(RUN) python benchmarks/run_all.py

# Issue 12's figures (docs/benchmarks.md, its last four sections): each script
# starts what it measures (a loopback registry, a Dask cluster) and stops it.
bench-supply-chain: setup
	$(RUN) python benchmarks/bench_registry.py
	$(RUN) python benchmarks/bench_signing.py
	$(RUN) python benchmarks/bench_packages.py
	$(RUN) python benchmarks/bench_dask.py --rounds 5

# docs/choosing.md's figures: each stock cap in every mode it has. JSON,
# Markdown and plots go to BENCH_OUT (outside the clone by default).
BENCH_OUT ?= $${PYLON_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/pylon}/bench-out
bench-choosing: setup
	mkdir -p "$(BENCH_OUT)"
	for cap in crc32c zstd sqlite; do \
		$(RUN) composectl bench $$cap --json "$(BENCH_OUT)/$$cap.json" --markdown "$(BENCH_OUT)/$$cap.md" \
			$$( [ $$cap = sqlite ] || echo --plot "$(BENCH_OUT)/$$cap.png" ) || exit 1; \
	done

# Python: ruff (rules in pyproject.toml), mypy --strict on python/pylon, and
# stubtest: the engine's stubs (python/pylon/_engine.pyi) against the built
# engine, minus what stubtest cannot see (stubtest-allowlist.txt).
# Their caches go to the cache folder, like every other build output.
lint: install
	export RUFF_CACHE_DIR="$${PYLON_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/pylon}/ruff-cache" && \
		$(RUN) ruff check python tests benchmarks
	export MYPY_CACHE_DIR="$${PYLON_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/pylon}/mypy-cache" && \
		$(RUN) mypy --strict && \
		$(RUN) python -m mypy.stubtest --mypy-config-file pyproject.toml --allowlist stubtest-allowlist.txt pylon._engine
	scripts/patch-crates.sh
	cd engine && export CARGO_TARGET_DIR="$${PYLON_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/pylon}/cargo-target" && \
		cargo fmt --check && cargo clippy --release -- -D warnings
