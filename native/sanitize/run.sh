#!/usr/bin/env bash
# Builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy (the
# work tree's build/ is untouched) and runs exercise.cjs under it in a fresh network namespace,
# then exercise-sg-io.cjs in the qemu test guest, where real SCSI devices exist
# (test/vm/sanitize-guest.ts).
# The scratch copy lives under /var/tmp: the guest sees the host root, but its own /tmp.
# Leak detection is off: Node itself keeps allocations to exit; fd leaks are a vitest test.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /var/tmp/tko-sanitize.XXXXXX)"
ns="tko-sanitize-$$"
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$root/native" "$root/package.json" "$work/"
ln -s "$root/node_modules" "$work/node_modules"
node -e '
  const g = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const t = g.targets[0];
  t.cflags_cc.push("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1");
  t.ldflags = ["-fsanitize=address,undefined"];
  require("fs").writeFileSync(process.argv[2], JSON.stringify(g, null, 1));
' "$root/binding.gyp" "$work/binding.gyp"
(cd "$work" && npx node-gyp rebuild >"$work/build.log" 2>&1) || { tail -30 "$work/build.log"; exit 1; }
ip netns add "$ns"
ip -n "$ns" link set lo up
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ip netns exec "$ns" node --expose-gc "$root/native/sanitize/exercise.cjs" "$work/build/Release/takeover.node"
echo "sanitizers on the host: clean"
(cd "$root" && npx tsx test/vm/sanitize-guest.ts "$work/build/Release/takeover.node" "$preload")
