#!/usr/bin/env bash
# Installs Debian packages. With --missing, only those not installed yet, so
# a machine that has them needs neither root nor the network.
set -euo pipefail
missing_only=0
if [ "${1:-}" = "--missing" ]; then
	missing_only=1
	shift
fi
want=()
for p in "$@"; do
	if [ "$missing_only" = 1 ] && dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		continue
	fi
	want+=("$p")
done
[ "${#want[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "apt-install: need root to install: ${want[*]}" >&2
	exit 1
fi
echo "apt-install: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
# A stale package list is the usual reason an install fails on a new machine.
if ! apt-get install -y -qq --no-install-recommends "${want[@]}" >/tmp/limpet-apt.log 2>&1; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${want[@]}"
fi
