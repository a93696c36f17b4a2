// `npm run sanitize`'s second half: runs native/sanitize/exercise-sg-io.cjs in the test guest
// (LIO through tcm_loop and iSCSI, and scsi_debug) with the sanitizer build of the addon at
// argv[2], which must be visible to the guest through the host root (not under /tmp, which the
// guest mounts afresh). Exit 0 when clean.
import { runGuest } from './run-guest.js';

const addon = process.argv[2];
if (!addon || addon.startsWith('/tmp/')) throw new Error(`usage: guest.ts ADDON (outside /tmp), not ${addon}`);
const preload = process.argv[3] ?? '';
const run = await runGuest({
  setup: ['tcm_loop', 'lio_iscsi', 'scsi_debug'],
  job: `LD_PRELOAD='${preload}' ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 node --expose-gc native/sanitize/exercise-sg-io.cjs '${addon}' 2>&1`,
  timeoutMs: 300_000,
});
const r = run.results[0];
if (run.exitCode !== 0 || !r?.ok) {
  console.error(`SG_IO under the sanitizers in the guest failed (exit ${run.exitCode}): ${JSON.stringify(r)}\n${run.log.slice(-6000)}`);
  process.exit(1);
}
console.log(`sanitizers in the guest: clean (${JSON.stringify(r)})`);
