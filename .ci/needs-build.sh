#!/usr/bin/env bash
# Whether a build output must be made again: exits 0 and says why when OUTPUT is missing or an
# INPUT (a file, or any file under a directory) was modified after it; exits 1 when it is up to
# date; 2 on a usage error or a missing input (a typo must not read as "up to date").
# Usage: .ci/needs-build.sh OUTPUT INPUT...   (OUTPUT may be "" for "none")
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: .ci/needs-build.sh OUTPUT INPUT..." >&2
  exit 2
fi
out=$1
shift
for input in "$@"; do
  [ -e "$input" ] || { echo "needs-build: no such input: $input" >&2; exit 2; }
done
if [ -z "$out" ] || [ ! -e "$out" ]; then
  echo "${out:-the output} is missing"
  exit 0
fi
newer=$(find "$@" -type f -newer "$out" -print -quit) || exit 2
if [ -n "$newer" ]; then
  echo "$newer is newer than $out"
  exit 0
fi
exit 1
