# limpet. Run 'make help' for the targets. 'make demo' and 'make test' need root.

GO          ?= go
CLANG       ?= clang-19
STRIP       ?= llvm-strip-19
BIN         := bin/limpet
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/limpet-lb/limpet/cmd/limpet/app.Version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Debian packages the tests use: curl and chromium drive the L7 proxy and the
# status page; the veth tests run the ethtool commands limpet prints; zsh and
# bash-completion run the completion scripts; systemd-container boots the
# packaged unit under systemd-nspawn; man-db checks the man page; bird2 is the
# router of the cluster lab.
TEST_PKGS   := curl chromium iproute2 ethtool zsh bash-completion systemd-container man-db bird2
BPF_PKGS    := clang-19 llvm-19 libbpf-dev

# make fuzz-datapath: packets, and a seed to replay a run (0: a fresh one).
FUZZ_PACKETS ?= 10000000
FUZZ_SEED   ?= 0

.PHONY: help generate build test lint demo demo-cluster bench bench-l7 bench-smoke deb fuzz-datapath deps-bpf deps-test clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps-bpf: ## install clang-19 and llvm-19 if missing (needs root)
	@command -v $(CLANG) >/dev/null && command -v $(STRIP) >/dev/null || \
		scripts/apt-install.sh $(BPF_PKGS)

deps-test: ## install the test tools that are missing (needs root)
	@scripts/apt-install.sh --missing $(TEST_PKGS)

generate: deps-bpf ## rebuild the BPF object and its Go bindings with clang-19
	cd loader && $(GO) generate ./...

build: ## build bin/limpet (no clang needed: the BPF object is committed)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/limpet

deb: build ## build bin/limpet.deb with nfpm: binary, systemd unit, example config, man page, completions, dashboard
	GO=$(GO) scripts/deb/build.sh

test: deps-test build deb ## run every test (as root; LIMPET_REQUIRE_ROOT=1 makes skipped privileged tests fail)
	LIMPET_BIN=$(CURDIR)/$(BIN) LIMPET_DEB=$(CURDIR)/bin/limpet.deb $(GO) test -count=1 -timeout 20m ./...

fuzz-datapath: ## hold the XDP datapath to its reference model on 10M generated packets (as root, about 10 min)
	$(GO) test -count=1 -v -timeout 60m -run '^TestDatapathDifferential$$' ./test/dpfuzz \
		-args -dpfuzz.packets=$(FUZZ_PACKETS) -dpfuzz.seed=$(FUZZ_SEED) -dpfuzz.workers=0 -dpfuzz.ops=8000

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo: build ## balance real traffic in an embedded lab, show persistence, clean up (as root)
	$(BIN) demo

demo-cluster: deps-test build ## 3 limpet nodes behind a BIRD router (ECMP, BGP, mirroring): drain and a crash under load, self-checking (as root, under 90 s)
	$(BIN) demo --cluster

bench: build ## benchmarks against the peers; prints and writes BENCHMARKS.md (as root, about 20 min; BASELINE=commit measures that commit's datapath in part 1 too, BASELINE=bin adds an earlier limpet to part 4)
	GO=$(GO) scripts/bench/run.sh -command "make bench$(if $(BASELINE), BASELINE=$(BASELINE))" -out BENCHMARKS.md $(if $(BASELINE),-baseline $(BASELINE))

bench-l7: build ## part 4 only (L7 against HAProxy and Caddy, with profiles); writes bin/BENCHMARKS-l7.md (as root, about 8 min; RUNS=n, BASELINE=bin)
	GO=$(GO) scripts/bench/run.sh -parts 4 -runs $(or $(RUNS),5) -command "make bench-l7" -out bin/BENCHMARKS-l7.md -l7-profile-dir bin/l7-profiles $(if $(BASELINE),-l7-baseline $(BASELINE))

bench-smoke: build ## the benchmark harness once with tiny counts, HEAD as part 1's baseline, exits non-zero if it broke (as root, under 90 s)
	GO=$(GO) scripts/bench/run.sh -smoke -baseline HEAD -command "make bench-smoke" -out bin/BENCHMARKS-smoke.md -q

clean: ## remove build output
	rm -rf bin
