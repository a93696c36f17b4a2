#!/usr/bin/env bash
# Builds the parser + flow table fuzz driver with ASan and UBSan and runs it.
# Usage: native/fuzz/run.sh [iterations] [seconds] [seed]   (defaults: 5,000,000 / 60 s / fixed)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
mkdir -p "$out"
bin="$out/parse_and_track"
srcs=("$here/parse_and_track.cc" "$here/../packet_parse.cc" "$here/../tcp_flows.cc")
if [ ! -x "$bin" ] || [ -n "$(find "${srcs[@]}" "$here/../packet_parse.h" "$here/../tcp_flows.h" "$here/../inet_checksum.h" -newer "$bin" 2>/dev/null)" ]; then
  g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -Wall -Wextra -o "$bin" "${srcs[@]}"
fi
ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" "${1:-5000000}" "${2:-60}" "${3:-31339}"
