#!/usr/bin/env bash
# The README's test command (`npm test`): installs what is missing, runs the whole suite, and
# ends with one plain line "N passed, N failed, N skipped" (CI reads it), keeping vitest's status.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh || exit $?
report="$(mktemp /tmp/takeover-vitest.XXXXXX.json)"
trap 'rm -f "$report"' EXIT
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@"
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$report" 2>/dev/null || echo "0 passed, 1 failed (vitest wrote no report)"
exit $status
