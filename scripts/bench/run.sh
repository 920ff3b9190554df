#!/usr/bin/env bash
# Runs limpet's benchmarks against the peers: `make bench` and
# `make bench-smoke`. Installs HAProxy, Caddy, nftables and wrk when they
# are missing, builds the harness (test/bench/cmd/limpet-bench) and the
# datapath agent (test/bench/cmd/limpet-bench-agent) and runs the harness
# with the arguments given; bin/limpet must exist (make build).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (network namespaces, XDP, bpffs)" >&2
	exit 2
fi
scripts/apt-install.sh --missing haproxy caddy nftables wrk
"${GO:-go}" build -o bin/limpet-bench ./test/bench/cmd/limpet-bench
# Part 1 runs this tree's datapath through its agent, built as a baseline
# commit's is (-baseline), so that both sides are the same kind of process.
"${GO:-go}" build -trimpath -o bin/limpet-bench-agent ./test/bench/cmd/limpet-bench-agent
exec bin/limpet-bench -limpet bin/limpet -agent bin/limpet-bench-agent -templates scripts/bench -go "${GO:-go}" "$@"
