# Campaign Orchestrator — the few targets you need.
#
#   make run    build and run the whole system on the embedded defaults: the step
#               simulator on 127.0.0.1:8081, the orchestrator (embedded NATS with
#               JetStream on 127.0.0.1:4222, in-process store, HTTP on :8000) and
#               the dashboard on http://localhost:3000.
#   make install  go install ./cmd/...: orchestrator and stepsim into $(go env GOPATH)/bin
#               (put it on PATH; the README's commands call orchestrator from there).
#   make test   vet, format check and every test under the race detector (needs
#               redis-server on PATH: tests start their own on loopback; the
#               dashboard's browser test needs chromium and node, and npm-installs
#               playwright-core once; the AsyncAPI check npm-installs the official
#               parser into test/asyncapi once).
#   make bench  the Go benchmarks (compare with benchstat).
#   make bench-load  orchestrator bench: 2,000 campaigns through the service beside the bare
#               pipeline, same servers (BENCH_FLAGS="--step-latency 200ms --campaigns 200" …).
#   make test-chaos  the fault-injection suite (internal/chaos, build tag chaos): real
#               orchestrator, nats-server and redis-server processes under load, killed
#               and frozen, then checked; CHAOS_SCALE=2 doubles the load, CHAOS_FLAGS adds
#               flags (-chaos.seed N, -chaos.report FILE). About 6 min at scale 1.
#   make fuzz   each fuzz target for FUZZTIME (default 20s), one after the other.
#   make lint   go vet, staticcheck (run at its pinned version) and gofmt, the chaos suite (build tag) included.
#   make tools  install the nats CLI (natscli v0.5.0) into $(GOBIN) or ~/go/bin.
#   make cluster / make cluster-down  a local production-shaped cluster on loopback
#               (deploy/local/cluster.sh): 3 nats-server nodes (JetStream, 3 replicas),
#               redis-server, two workers, one ingress (:8300), the step simulator;
#               pid files and logs in .cluster/. cluster-down leaves nothing running.
#   make test-cluster  200 campaigns through deploy/local/cluster.sh itself (free ports;
#               cluster.sh stop/start of nats-n1 and worker-1, every campaign completed,
#               nothing left after down), and 200 on its node configuration while one NATS
#               node and one of two orchestrators are killed and started again; both
#               checked by the reliability suite's checker.
#   make test-deploy  decode the Kubernetes example into the k8s.io/api types (its own
#               module, deploy/kubernetes, so the service does not depend on k8s.io/api).
#   make vulncheck  govulncheck (needs the Go vulnerability database: not on CI here).

GO      ?= go
BIN     := bin
NATSCLI := github.com/nats-io/natscli/nats@v0.5.0
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test bench lint tools build install clean test-chaos e2e-deps asyncapi-deps cluster cluster-down test-cluster test-deploy vulncheck

build:
	$(GO) build -o $(BIN)/orchestrator ./cmd/orchestrator
	$(GO) build -o $(BIN)/stepsim ./cmd/stepsim

install:
	$(GO) install ./cmd/...

run: build
	@echo "step simulator on 127.0.0.1:8081, orchestrator HTTP on :8000, NATS on nats://127.0.0.1:4222"
	@echo "dashboard on http://localhost:3000 (open it in a browser; Ctrl-C stops all three)"
	@trap 'kill $$sim $$dash 2>/dev/null; wait $$sim $$dash 2>/dev/null' EXIT INT TERM; \
	 $(BIN)/stepsim -addr 127.0.0.1:8081 -latency 2s & sim=$$!; \
	 $(BIN)/orchestrator dashboard --addr 127.0.0.1:3000 --api http://localhost:8000 & dash=$$!; \
	 $(BIN)/orchestrator serve

lint:
	$(GO) vet ./...
	$(GO) vet -tags chaos ./internal/chaos/
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags chaos ./internal/chaos/
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

test: lint e2e-deps asyncapi-deps
	$(GO) test -race -count=1 -timeout 15m ./...

# playwright-core and axe-core for the dashboard's browser test (npm ci of the
# committed lock file, again when it changes; it drives Debian's chromium and
# downloads no browser).
E2E := internal/dashboard/testdata/e2e
e2e-deps:
	@if command -v npm >/dev/null 2>&1 && { [ ! -f $(E2E)/node_modules/.package-lock.json ] || \
	  [ $(E2E)/package-lock.json -nt $(E2E)/node_modules/.package-lock.json ]; }; then \
	  npm ci --prefix $(E2E) --no-audit --no-fund; fi

# @asyncapi/parser for test/asyncapi, which validates docs/asyncapi.yaml (npm ci
# of the committed lock file, again when it changes; no install scripts).
ASYNCAPI := test/asyncapi
asyncapi-deps:
	@if command -v npm >/dev/null 2>&1 && { [ ! -f $(ASYNCAPI)/node_modules/.package-lock.json ] || \
	  [ $(ASYNCAPI)/package-lock.json -nt $(ASYNCAPI)/node_modules/.package-lock.json ]; }; then \
	  npm ci --prefix $(ASYNCAPI) --ignore-scripts --no-audit --no-fund; fi

test-chaos:
	$(GO) test -race=false -tags chaos -count=1 -timeout 30m ./internal/chaos/ -run . -v $(CHAOS_FLAGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200ms -count 5 ./...

bench-load: build
	$(BIN)/orchestrator bench --campaigns 2000 --baseline $(BENCH_FLAGS)

# -fuzz takes one target per package run: one line per target.
FUZZTIME ?= 20s

.PHONY: fuzz
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime $(FUZZTIME) ./internal/events
	$(GO) test -run '^$$' -fuzz '^FuzzParseSubject$$' -fuzztime $(FUZZTIME) ./internal/events
	$(GO) test -run '^$$' -fuzz '^FuzzNewDeadLetterMsg$$' -fuzztime $(FUZZTIME) ./internal/events
	$(GO) test -run '^$$' -fuzz '^FuzzCreateCampaignBody$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzCampaignVerbBody$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./internal/workflow
	$(GO) test -run '^$$' -fuzz '^FuzzFSM$$' -fuzztime $(FUZZTIME) ./internal/fsm

tools:
	$(GO) install $(NATSCLI)

cluster: build
	$(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2
	deploy/local/cluster.sh up

cluster-down:
	deploy/local/cluster.sh down

test-cluster:
	CHAOS_LOCAL_CLUSTER=1 $(GO) test -race=false -tags chaos -count=1 -timeout 15m ./internal/chaos/ -run '^(TestChaosLocalCluster|TestChaosMakeCluster)$$' -v $(CHAOS_FLAGS)

test-deploy:
	cd deploy/kubernetes && $(GO) test -count=1 ./...

GOVULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0

vulncheck:
	$(GO) run $(GOVULNCHECK) ./...

clean:
	rm -rf $(BIN)
