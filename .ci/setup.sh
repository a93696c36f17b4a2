#!/usr/bin/env bash
# Installs what the tests need and is missing, as root, idempotently; then builds the project.
# Run by `npm test` (and so by .ci/run) on a fresh machine: nothing installed by hand is assumed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "takeover tests need root (network namespaces, raw sockets, TCP_REPAIR): run as root" >&2
  exit 2
fi

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v iptables >/dev/null || missing+=(iptables)   # the output commit's NFQUEUE rules (src/net/held-traffic.ts)
command -v python3 >/dev/null || missing+=(python3)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v tcpdump >/dev/null || missing+=(tcpdump)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v nginx >/dev/null || missing+=(nginx)   # the HTTP download continued with a range (test/lab/continue-download.test.ts)
command -v etcd >/dev/null || missing+=(etcd-server)   # the cluster store's etcd engine (test/lab/etcd-cluster.ts)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # verifies the example unit (not run as init)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own PostgreSQL, Redis and etcd from starting: tests start their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The SCSI device tests boot a qemu guest (test/vm/).
bash test/vm/setup-deps.sh

# node-gyp compiles the addon's sources one at a time unless told otherwise: on every core instead
# (both builds below read JOBS: the install script's and the rebuild). On a 2-core machine that
# halves a ~45 s compile.
export JOBS=max

# Dependencies, the addon (node-gyp, via the install script) and dist/ (the prepare script).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# Each is made again when its sources changed since (a pull, a branch switch): tests must never
# run a stale addon or dist/. `stale WHAT CHECK...` says why and succeeds when WHAT must be made
# again; a check that fails (status 2: a missing input) stops the setup.
stale() {
  local what=$1 why rc
  shift
  why="$("$@")" && rc=0 || rc=$?
  if [ "$rc" -gt 1 ]; then echo "setup: cannot tell whether $what is up to date ($*: status $rc)" >&2; exit "$rc"; fi
  if [ "$rc" = 0 ]; then echo "building $what: $why"; fi
  return "$rc"
}
if stale 'the addon' bash .ci/addon-needs-build.sh; then npx node-gyp rebuild; fi
if stale dist/ bash .ci/needs-build.sh dist/cli/main.js src tsconfig.json tsconfig.build.json; then npx tsc -p tsconfig.build.json; fi
