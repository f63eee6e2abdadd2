# Tollgate — metering LLM gateway. `make help` lists the targets.

GO          ?= go
BIN         := bin
GOBIN       := $(shell $(GO) env GOPATH)/bin
STRIPE_MOCK := $(GOBIN)/stripe-mock
STRIPE_MOCK_VERSION := v0.203.0
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
FUZZTIME    ?= 60s
CONFIG      ?= configs/tollgate.yaml
ADDR        ?=
BILLING_ADDR ?=
# Release stamp: git describe (dev without a tag), the commit, the build time (RFC 3339).
VERSION     ?= $(shell git describe --tags --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DATE  ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(BUILD_DATE)

.DEFAULT_GOAL := help
.PHONY: help run build test test-short e2e bench fuzz soak lint cover tools clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: build ## start a working gateway (proxy + billing, embedded Redis unless REDIS_URL is set, mock providers for unset keys); ADDR=host:port BILLING_ADDR=host:port move them
	$(BIN)/tollgate dev --config $(CONFIG) $(if $(ADDR),--addr $(ADDR)) $(if $(BILLING_ADDR),--billing-addr $(BILLING_ADDR))

build: ## build bin/tollgate (static, CGO_ENABLED=0, version-stamped) and bin/mockllm
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/tollgate ./cmd/tollgate
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/mockllm ./cmd/mockllm
	@$(GO) version -m $(BIN)/tollgate | grep -q 'CGO_ENABLED=0' || { echo "bin/tollgate is not a static (CGO_ENABLED=0) build"; exit 1; }
	@! command -v file >/dev/null || file $(BIN)/tollgate | grep -q 'statically linked' || { file $(BIN)/tollgate; echo "bin/tollgate is dynamically linked"; exit 1; }
	@$(BIN)/tollgate --version | head -1

test: tools ## run every test with the race detector (starts its own redis-server and stripe-mock)
	$(GO) test -race -count=1 -timeout 15m ./...

test-short: tools ## the tests without the race detector (faster)
	$(GO) test -count=1 -timeout 10m ./...

e2e: tools ## browser tests of the console: real billing, redis-server, stripe-mock, Debian chromium (npm ci in e2e/ first); screenshots in e2e/out
	@test -d e2e/node_modules/playwright-core || (cd e2e && npm ci --no-audit --no-fund)
	TOLLGATE_E2E=1 $(GO) test -count=1 -timeout 8m -run '^TestConsole$$' -v ./test/e2e/

bench: build ## hot-path Go benchmarks, then the load harness on loopback: table + bench/results.json + bench/latency.svg
	$(GO) test -run '^$$' -bench 'Handler|Inspect|Rewrite|UsageParse' -benchmem ./proxy/
	$(GO) run ./test/bench

fuzz: ## run every fuzz target for FUZZTIME (default 60s) each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

soak: build ## the load and fault suites at full size
	TOLLGATE_SOAK=full $(GO) test -count=1 -timeout 60m -run 'Soak|Fault' -v ./test/... ./books/

lint: ## go vet, gofmt, staticcheck (pinned), go mod tidy leaves go.mod as it is
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	@$(STATICCHECK) -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))' || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff

cover: tools ## test coverage report (cover.out, cover.html)
	$(GO) test -count=1 -coverprofile=cover.out ./...
	$(GO) tool cover -html=cover.out -o cover.html
	$(GO) tool cover -func=cover.out | tail -1

tools: $(STRIPE_MOCK) ## install the test tools (stripe-mock)

$(STRIPE_MOCK):
	$(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

clean: ## remove build output
	rm -rf $(BIN) cover.out cover.html e2e/out
