# Vigil. `make test` is what CI runs (.ci/run); it needs root for the real-kernel tests.
GO        ?= go
# One version scheme for every route (scripts/version.sh, packaging/README.md).
VERSION   ?= $(shell ./scripts/version.sh 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := bin/vigil
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
SCHEDULES ?= 10000
SERVICES ?= 1

.PHONY: all build test test-short lint deps bench-supervisor sim demo demo-supervise clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/vigil

# Everything CI checks: lint, then every test (root tests included when run as root).
# test/e2e runs after the rest, not beside it: its three Vigil instances and
# keepalived take most of the kernel's realtime budget (cpu.rt_runtime_us),
# which the realtime tests in test/supervise need too. The rest runs with
# the race detector (cgo: gcc, from make deps); test/e2e's processes are
# the product's static build either way.
test: lint build
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -count=1 -timeout 20m ./test/e2e/...

test-short: build
	$(GO) test -count=1 -short ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...

# System packages the tests use (Debian 12). Idempotent.
deps:
	./scripts/install-deps.sh

bench-supervisor: build
	$(GO) run ./bench/supervisor $(BENCHFLAGS)

# The simulator (test/sim); SIMFLAGS passes more flags, e.g. -max-not-preferred=0.02 as CI does.
sim:
	$(GO) run ./test/sim -schedules $(SCHEDULES) -services $(SERVICES) $(SIMFLAGS)

# Two nodes and a witness in network namespaces, SIP calls to the floating
# IP, the active crashed (test/e2e/demo). Needs root, sipp, stress-ng.
demo: build
	$(GO) run ./test/e2e/demo -vigil $(abspath $(BIN)) $(DEMOFLAGS)

# The one-node supervision demo (restart of a killed SIP server).
demo-supervise: build
	./scripts/demo.sh

clean:
	rm -rf bin dist

# Packages (packaging/README.md): dist/vigil_<version>_amd64.deb and
# dist/vigil-<version>.x86_64.rpm, version from git describe.
.PHONY: deb rpm test-vm
deb:
	./packaging/build.sh deb

rpm:
	./packaging/build.sh rpm

# The .deb under a real systemd in a qemu VM (test/vm/systemd/README.md).
test-vm:
	./scripts/vm-systemd-test.sh

# cgroup v2 tests (./cgroup, ./test/supervise, ./test/vm/v2) in a qemu VM
# booting Debian's cloud kernel; needs qemu-system-x86, busybox-static, cpio.
.PHONY: test-v2
test-v2:
	VIGIL_VM_TESTS=1 $(GO) test -count=1 -timeout 20m -v -run TestCgroupV2VM ./test/vm/v2/

# Reserved control plane under noisy neighbours (issue 3). Needs root and
# stress-ng; BENCHFLAGS=-short for CI, -duration 60s per variant by default.
# Failover end to end, Vigil beside keepalived (issue 5, test/e2e). Needs
# root, sipp, stress-ng, keepalived. BENCHFLAGS=-short for CI; the full run
# (10 runs of 7 scenarios x 4 systems, 60 s noisy) takes about 90 minutes.
.PHONY: bench-failover
bench-failover: build
	$(GO) run ./bench/failover -vigil $(abspath $(BIN)) $(BENCHFLAGS)

# The timing trade-off as a picture (issue 14): Vigil's lease 400..40 ms and
# keepalived's advert_int 1000/100/10 ms, kill and linkdown outage p99
# against false failovers per hour under the noisy neighbour. Needs root,
# sipp, stress-ng, keepalived. Writes docs/img/tradeoff.svg and
# docs/tradeoff.md; the full run (8 points x 5 runs of kill, linkdown and
# a 60 s noisy) takes about 65 minutes. BENCHFLAGS=-short for CI (~2 min,
# output in $TMPDIR); BENCHFLAGS="-from LOG" redraws from a saved output.
.PHONY: bench-tradeoff
bench-tradeoff: build
	$(GO) run ./bench/tradeoff -vigil $(abspath $(BIN)) $(BENCHFLAGS)

.PHONY: bench-isolation
bench-isolation:
	$(GO) run ./bench/isolation $(BENCHFLAGS)

# The control plane's own cost (issue 14): RSS, idle CPU and major faults
# under the memory neighbour of each supervisor, locator and node manager,
# two nodes and a witness in a network namespace. Needs root; stress-ng
# for -memory. BENCHFLAGS=-short for CI; e.g. BENCHFLAGS="-soak 1h -memory 60s".
.PHONY: bench-controlplane
bench-controlplane: build
	$(GO) run ./bench/controlplane -vigil $(abspath $(BIN)) $(BENCHFLAGS)

# A takeover of many floating IPs (issue 15, item 4): decision to all added,
# to the last first announcement, to the client having seen it, and the
# release, for 1, 16 and 256 addresses, ClaimAll beside one Claim per
# address. Needs root (namespaces, nftables). BENCHFLAGS=-short for CI.
.PHONY: bench-vips
bench-vips:
	$(GO) run ./bench/vips $(BENCHFLAGS)
