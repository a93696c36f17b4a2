#!/usr/bin/env bash
# The README's test command (`npm test`): installs what is missing, runs the whole suite, and
# ends with one plain line "N passed, N failed, N skipped" (CI reads it). The line and the exit
# status come from .ci/summary.mjs: failed hooks, files and suites count as failures, and in CI
# (CI=true) so does any skipped test.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh || exit $?
report="$(mktemp /tmp/takeover-vitest.XXXXXX.json)"
trap 'rm -f "$report"' EXIT
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@"
node .ci/summary.mjs "$report" "$?"
