# Open-AutoGLM — run `make help` for the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DAPR_VERSION := 1.14.0
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help run run-cluster run-saga sidecar build daprd test test-unit test-deploy lint deadcode fmt tidy tidy-check clean bench bench-smoke bench-peers

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: build sidecar ## start the service on the embedded default (SQLite + in-memory pub/sub)
	./bin/autoglm-dev -profile local -data data $(RUN_FLAGS)

CLUSTER_PROFILE ?= redis

run-cluster: build sidecar ## start 3 replicas on the Redis profile (CLUSTER_PROFILE=postgres: PostgreSQL + NATS); ports 8080-8082
	./bin/autoglm-dev -profile $(CLUSTER_PROFILE) -replicas 3 -data data/cluster

run-saga: build sidecar ## the order/inventory saga: sync service + inventory service, each with daprd (needs Redis on 127.0.0.1:6379)
	$(GO) build -trimpath -o bin/inventory ./app/cmd/inventory
	$(GO) build -trimpath -o bin/saga-dev ./app/cmd/saga-dev
	./bin/saga-dev -data data/saga

# An installed daprd 1.14.x (DAPRD=..., the Dapr CLI's ~/.dapr/bin/daprd,
# or daprd on PATH) is used as it is; bin/daprd is built only when none is.
sidecar: ## use an installed daprd 1.14.x (DAPRD=, ~/.dapr/bin/daprd, PATH), else build bin/daprd
	@$(GO) build -trimpath -o bin/autoglm-dev ./app/cmd/autoglm-dev
	@if [ -n "$${DAPRD:-}" ]; then ./bin/autoglm-dev -find-daprd; \
	elif ! ./bin/autoglm-dev -find-daprd -installed 2>/dev/null; then \
		echo "no installed daprd 1.14.x (DAPRD, ~/.dapr/bin/daprd, PATH): using bin/daprd, built from tools/daprd"; \
		$(MAKE) --no-print-directory bin/daprd; fi

build: ## build bin/autoglm and the dev runner
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/autoglm ./app/cmd/autoglm
	$(GO) build -trimpath -o bin/autoglm-dev ./app/cmd/autoglm-dev

daprd: bin/daprd ## build the pinned daprd sidecar (minutes on a cold machine)

# Rebuilt only when the pin (tools/daprd/go.mod, go.sum, main.go) changes.
bin/daprd: tools/daprd/go.mod tools/daprd/go.sum tools/daprd/main.go
	@echo "building daprd $(DAPR_VERSION) from tools/daprd (cold: ~6 min of downloads + ~3 min compile)"
	@cd tools/daprd && $(GO) mod download -x 2>&1 | awk '/^# get .*\.zip$$/ {n++; if (n % 25 == 0) printf "  ... %d modules downloaded\n", n; fflush()} END {printf "  %d modules downloaded\n", n}'
	@cd tools/daprd && $(GO) build -v -tags stablecomponents \
		-ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=$(DAPR_VERSION)" \
		-o ../../bin/daprd.tmp . 2>&1 \
		| awk '{n++; if (n % 100 == 0) printf "  ... %d packages compiled\n", n; fflush()} END {printf "  %d packages compiled\n", n}'
	@mv bin/daprd.tmp bin/daprd
	@./bin/daprd --version

test: sidecar ## run the whole test suite (unit, integration against daprd + Redis, deployment checks)
	$(MAKE) --no-print-directory tidy-check
	$(GO) vet ./...
	@test -z "$$(gofmt -l app tools)" || { echo "gofmt needed:"; gofmt -l app tools; exit 1; }
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory bench-smoke
	@if [ -d tools/deploycheck ]; then cd tools/deploycheck && $(GO) test -count=1 ./...; fi
	$(MAKE) --no-print-directory test-js test-browser

BENCH_FLAGS ?=

PEERS := app/bench/peers

bench: build sidecar $(PEERS)/node_modules/.package-lock.json ## benchmark delta sync vs full push and polling, throughput, idle memory, and side by side with Hocuspocus and y-websocket (local + redis; results in bench/out)
	$(GO) build -trimpath -o bin/autoglm-bench ./app/cmd/autoglm-bench
	./bin/autoglm-bench -profile local,redis -out bench/out -peers $(PEERS) $(BENCH_FLAGS)
	$(MAKE) --no-print-directory bench-text
	$(MAKE) --no-print-directory bench-queries

bench-queries: sidecar ## queries: initial query on 100,000 documents (index; postgres query API), matching cost against 1,000 live queries, added/removed latency (one replica; across two at 200 writes/s)
	$(GO) test -run '^$$' -bench '^Benchmark(QueryLimit50|ChangeAgainst1000Queries|AddedRemovedLatency)$$' -benchtime 3s ./app/query/live
	$(GO) test -run '^$$' -bench '^BenchmarkAddedRemovedAcrossReplicas$$' -benchtime 2000x ./app/query/live
	$(GO) test -run '^$$' -bench '^BenchmarkQueryLimit50Postgres$$' -benchtime 30x -timeout 30m ./app/daprquery

bench-peers: build sidecar $(PEERS)/node_modules/.package-lock.json ## under a minute: one round of ours vs Hocuspocus and y-websocket (100 subscribers, 200 writes/s, local profile)
	$(GO) build -trimpath -o bin/autoglm-bench ./app/cmd/autoglm-bench
	./bin/autoglm-bench -peers-only -peers-quick -peers $(PEERS) -out bench/out $(BENCH_FLAGS)

# The peer servers and their clients, pinned by the committed lockfile;
# install scripts are skipped (only y-websocket's optional LevelDB
# persistence has one, and the baseline runs in memory).
$(PEERS)/node_modules/.package-lock.json: $(PEERS)/package.json $(PEERS)/package-lock.json
	cd $(PEERS) && npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

bench-smoke: build sidecar ## a few seconds of the benchmark on the local profile; fails on any missed or duplicated delivery
	$(GO) build -trimpath -o bin/autoglm-bench ./app/cmd/autoglm-bench
	./bin/autoglm-bench -smoke -profile local -out bench/out/smoke

# The inner loop: no race detector (make test runs every package under
# -race), whose build and run cost the fast tests ~2.7x their time.
test-unit: ## fast tests only (no daprd, no race detector)
	$(GO) test -count=1 -short ./...

lint: tidy-check deadcode ## go vet, gofmt, staticcheck, unreachable code and go.mod tidiness
	$(GO) vet ./...
	@test -z "$$(gofmt -l app tools)" || { gofmt -l app tools; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Functions no main package or test reaches. The Go client (app/client) is a
# library for other programs, so its exported API is exempt.
deadcode: ## fail on unreachable functions
	@out="$$($(GO) run golang.org/x/tools/cmd/deadcode@v0.52.0 -test ./...)"; \
	out="$$(grep -v '^app/client/' <<<"$$out" || true)"; \
	test -z "$$out" || { echo "$$out"; echo "unreachable functions: delete them"; exit 1; }

fmt: ## format the Go code
	gofmt -w app tools

tidy: ## tidy every Go module
	$(GO) mod tidy
	cd tools/daprd && $(GO) mod tidy
	@if [ -d tools/deploycheck ]; then cd tools/deploycheck && $(GO) mod tidy; fi

tidy-check: ## fail when go mod tidy would change a go.mod or go.sum
	@for m in . tools/daprd tools/deploycheck; do \
		[ -f $$m/go.mod ] || continue; \
		(cd $$m && $(GO) mod tidy -diff) || { echo "go mod tidy needed in $$m (run make tidy)"; exit 1; }; done

clean: ## remove build outputs and local data
	rm -rf bin data

# The JavaScript client and the demo page (app/web): node --test and
# Playwright driving Debian's Chromium, each against a real replica started
# by app/web/webtest_test.go. npm packages come from the committed lockfile.
.PHONY: test-js test-browser bench-text bench-queries
WEB := app/web

test-js: sidecar $(WEB)/node_modules/.package-lock.json ## JS client tests (node --test) against a real replica
	$(GO) vet -tags webtest ./$(WEB)
	$(GO) test -tags webtest -count=1 -timeout 10m -run '^TestJS$$' -v ./$(WEB)

test-browser: sidecar $(WEB)/node_modules/.package-lock.json ## demo page end to end in Chromium (needs /usr/bin/chromium)
	$(GO) test -tags webtest -count=1 -timeout 15m -run '^TestBrowser$$' -v ./$(WEB)

bench-text: daprd $(WEB)/node_modules/.package-lock.json ## text fields against Yjs on the same traces (results in bench/out/text.json)
	$(GO) test -run '^$$' -bench '^BenchmarkTextApply100KB$$' -benchtime 2000x -benchmem ./app/merge
	$(GO) test -tags webtest -count=1 -timeout 10m -run '^TestTextBench$$' -v ./$(WEB)

$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	@touch $@

# Fuzzing is not part of make test: each target runs FUZZTIME (default 1m).
.PHONY: fuzz
FUZZTIME ?= 1m
FUZZ_TARGETS := \
	./app/protocol:FuzzDecode ./app/protocol:FuzzDecodeFrames \
	./app/merge:FuzzApply ./app/merge:FuzzFieldOpValidate ./app/merge:FuzzMergeConverges ./app/merge:FuzzTextConverges \
	./app/clock:FuzzParseTimestamp ./app/collections/schemafile:FuzzParse

fuzz: ## run every fuzz target for FUZZTIME each (not in CI)
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done
