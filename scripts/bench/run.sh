#!/usr/bin/env bash
# Runs limpet's benchmarks against the peers: `make bench` and
# `make bench-smoke`. Installs HAProxy, Caddy, nftables and wrk when they
# are missing, builds the harness (test/bench/cmd/limpet-bench) and runs it
# with the arguments given; bin/limpet must exist (make build).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (network namespaces, XDP, bpffs)" >&2
	exit 2
fi
scripts/apt-install.sh --missing haproxy caddy nftables wrk
"${GO:-go}" build -o bin/limpet-bench ./test/bench/cmd/limpet-bench
exec bin/limpet-bench -limpet bin/limpet -templates scripts/bench -go "${GO:-go}" "$@"
