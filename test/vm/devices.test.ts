// SCSI against real targets (issue 4): one qemu TCG guest boot runs the whole device suite
// (test/vm/guest/device-suite.ts) with the project's addon and code, against one LIO LUN seen
// through two tcm_loop nexuses and two iSCSI sessions (pairs of "nodes"), and a scsi_debug disk
// (no PR support). Each check
// the guest reports is asserted here, with its details in the failure message.
import { beforeAll, describe, expect, it } from 'vitest';
import { checkoutOf } from './checkout.js';
import { REPO_ROOT, runGuest, type GuestRun } from './run-guest.js';
import { bundleGuestScript } from './guest-bundle.js';

let run: GuestRun;
// Quiet, the guest runs the suite in ~200 s (TCG); a loaded machine starves it: 420 s of room.
beforeAll(async () => {
  // Bundled (plain node, no tsx transpiling under TCG) and read through 9p's loose cache: the
  // suite reads only files that exist at boot.
  // The suite's last check runs wedged-target.ts in a process of its own: bundled too (through
  // tsx it took ~30 s of a loaded run; bundled, ~7 s with its 3 s fence).
  const bundle = await bundleGuestScript('test/vm/guest/device-suite.ts');
  const wedged = await bundleGuestScript('test/vm/guest/wedged-target.ts');
  run = await runGuest({ setup: ['tcm_loop', 'lio_iscsi', 'scsi_debug'], hostCache: 'loose', job: `exec node ${bundle} ${wedged}`, timeoutMs: 420_000 });
  const num = (check: string, key: string) => Number(run.results.find((r) => String(r.check).startsWith(check))?.[key]).toFixed(1);
  console.info(`guest: first result after ${Math.round(run.firstResultMs ?? NaN)} ms, whole run ${Math.round(run.totalMs)} ms; PREEMPT AND ABORT ${num('PREEMPT AND ABORT', 'preemptMs')} ms; fence ${num('fencing', 'fenceMs')} ms, noticed after ${num('fencing', 'noticedMs')} ms; disk heartbeat: dead ${num('disk heartbeat', 'declaredMs')} ms after the pulse stopped; agent with a disk witness: DOWN ${num('the agent with a disk witness', 'declaredAfterPulseStoppedMs')} ms after it; cluster manager with a disk witness: b HOST ${num('the cluster manager with a disk witness', 'failoverMs')} ms after a's stop; agent: fenced ${num('the agent fences', 'fenceAfterDecisionMs')} ms after deciding, noticed ${num('the agent fences', 'noticedAfterFenceMs')} ms later; a hanging target: the fence failed after ${num('a target that hangs', 'fenceMs')} ms`);
}, 440_000);

const CHECKS = [
  'identity: four nexuses (two tcm_loop, two iSCSI), one logical unit',
  'register and read keys from both nexuses',
  'every reservation type: what the other, registered nexus may do',
  'report capabilities, APTPL, read full status',
  'preempt: the preempted nexus cannot write, can read, and gets its unit attention handled',
  'PREEMPT AND ABORT over iSCSI: the preempted nexus cannot write, can read, and gets its unit attention handled',
  'SPC-2 RESERVE(6): the other nexus gets RESERVATION CONFLICT, also for TEST UNIT READY',
  'disk heartbeat: a live primary is never declared dead; a stopped one is, within the timeout',
  'fencing end to end over iSCSI: B fences A with PREEMPT AND ABORT; A cannot write, notices, and rejoins',
  'the agent with a disk witness (seed 002): LAN silence alone is disputed; dead once the disk agrees too',
  'the cluster manager with a disk witness (seed 002): a cut off from the LAN and the store but pulsing on the disk is not failed over; once its pulse stops, b is HOST',
  'the agent fences a peer that only looks dead (LAN silent, still running); the fenced agent stops the instance it runs',
  'takeover scsi / fence CLI: exit 0, 3 on RESERVATION CONFLICT, JSON',
  'scsi_debug (no persistent reservations) is reported as such',
  'a dead device path is bounded: a command on a closed transport fails at once',
  'a target that hangs (PREEMPT AND ABORT through tcm_loop): the fence fails in bounded time and says why',
];

describe('SCSI on LIO (tcm_loop and iSCSI) and scsi_debug in a qemu guest', () => {
  it('the guest ran this checkout (runGuest refuses a run from another)', () => {
    expect(run.checkout).toBe(checkoutOf(REPO_ROOT));
  });

  it('the guest ran the whole suite', () => {
    expect(run.exitCode, run.log.slice(-3000)).toBe(0);
    expect(run.results.map((r) => r.check), run.log.slice(-3000)).toEqual([...CHECKS, 'done']);
  });

  it.each(CHECKS)('%s', (name) => {
    const r = run.results.find((x) => x.check === name);
    expect(r, `no result for "${name}"; guest console:\n${run.log.slice(-3000)}`).toBeDefined();
    expect(r!.ok, JSON.stringify(r, null, 2)).toBe(true);
  });
});
