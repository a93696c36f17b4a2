#!/usr/bin/env bash
# Builds the parser + flow table fuzz driver (fuzz_packets.cc) with ASan and UBSan and runs it.
# The binary is cached in native/fuzz/out/ (gitignored) and rebuilt only when a source is newer.
# Usage: native/fuzz/run.sh [iterations] [seconds] [seed]   (defaults: 10,000,000 / 90 s / fixed; ~40 s)
# Exits non-zero on a compile error, an invariant violation or a sanitizer report.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
mkdir -p "$out"
bin="$out/fuzz_packets"
srcs=("$here/fuzz_packets.cc" "$here/../packet_parse.cc" "$here/../tcp_flows.cc")
deps=("${srcs[@]}" "$here/../packet_parse.h" "$here/../tcp_flows.h" "$here/../inet_checksum.h" "$0")
if [ ! -x "$bin" ] || [ -n "$(find "${deps[@]}" -newer "$bin" 2>/dev/null)" ]; then
  # Build to a temporary name so a concurrent run never sees a half-written binary.
  tmp="$bin.$$"
  g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -o "$tmp" "${srcs[@]}"
  mv -f "$tmp" "$bin"
fi
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
exec "$bin" "${1:-10000000}" "${2:-90}" "${3:-31339}"
