# csmh-sync: `make test` and `make demo` set up everything they need on a fresh Debian machine (as root).
GO       ?= go
PKGS     := ./...
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/csmh-sync/csmh-sync/internal/buildinfo.Version=$(VERSION)
RULES    := docker/prometheus/csmh-sync-rules.yml
RULETEST := docker/prometheus/csmh-sync-rules.test.yml

.PHONY: all build deps vet test test-go test-rules bench bench-scale demo clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/csmh-sync ./cmd/csmh-sync

# deps installs what the tests need from Debian's packages when it is missing: mariadbd, promtool, openssl (the TLS
# tests' certificates), and ip and unshare, which the tests' network, UTS and mount namespaces need.
deps:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing="$$missing iproute2"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	command -v mariadb-install-db >/dev/null 2>&1 || missing="$$missing mariadb-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing:$$missing — install it with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

# vet also fails when go.mod or go.sum are not what `go mod tidy` makes of them (e.g. a direct requirement
# marked `// indirect`). tidy reads the modules of the dependencies' own tests too: offline (GOPROXY=off) it
# works from a module cache that holds them, as it does once `go mod tidy` has run with network access.
vet:
	$(GO) vet $(PKGS)
	@out=$$($(GO) mod tidy -diff 2>&1) || { echo "$$out"; \
	  echo "go.mod/go.sum are not tidy (or their modules are not in the module cache): run 'go mod tidy'"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

test: deps vet test-rules test-go

test-go:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-rules:
	promtool check rules $(RULES)
	promtool test rules $(RULETEST)

# bench runs alone: it measures csmh-sync against baselines in the same run and prints ratios.
# CSMH_BENCH_ROWS sets the data size; the backfill runs with its defaults. For tuning runs, CSMH_BENCH_ARGS adds
# flags to the cross-server backfill and CSMH_BENCH_PATHS keeps only some of its paths (docs/benchmarks.md).
CSMH_BENCH_ROWS ?= 1000000
export CSMH_BENCH_ROWS
bench: deps
	$(GO) test -run '^$$' -bench '^Benchmark(AppImpact|Backfill|Cutover|Replication|Verify)' -benchtime 1x -timeout 90m ./test/bench/

# bench-scale (not part of bench) measures a table that does not fit in memory: CSMH_BENCH_SCALE_ROWS rows
# (default 10,000,000; about 9 GB per copy, 40 GB of disk in all) on servers whose buffer pools hold a tenth of it.
bench-scale: deps
	$(GO) test -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 6h ./test/bench/

demo: deps build
	$(GO) run ./test/integration/demo

clean:
	rm -rf bin .demo
