// Two servers, two qemu guests, one shared disk on the host's tgtd (issue 4): each guest logs in
// with the kernel iSCSI initiator and runs test/vm/guest/tgtd-node.ts with the project's addon.
// The backup fences the primary (PREEMPT, since tgtd rejects PREEMPT AND ABORT); the primary's
// next write gets RESERVATION CONFLICT. tgtd and both guests are stopped in afterAll, whatever happened.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGuest, type GuestRun } from './run-guest.js';
import { bundleGuestScript } from './guest-bundle.js';
import { startTgtd, type Tgtd } from './tgtd.js';

let tgtd: Tgtd | undefined;
let primary: GuestRun;
let backup: GuestRun;
const IQN = 'iqn.2026-11.io.takeover';

beforeAll(async () => {
  tgtd = await startTgtd({ target: `${IQN}:shared`, sizeMb: 16 });
  // Bundled once for both guests (plain node, no tsx under TCG), read through 9p's loose cache.
  const bundle = await bundleGuestScript('test/vm/guest/tgtd-node.ts');
  const node = (role: string) =>
    runGuest({
      setup: [],
      hostCache: 'loose',
      iscsi: { portals: tgtd!.portals, target: tgtd!.target, initiators: [`${IQN}:${role}`] },
      job: `exec node ${bundle} ${role}`,
      timeoutMs: 240_000,
    });
  [primary, backup] = await Promise.all([node('primary'), node('backup')]);
  const fenced = backup.results.find((r) => typeof r.fenceMs === 'number');
  const refused = primary.results.find((r) => 'writesBeforeFence' in r);
  console.info(`guests: primary ${Math.round(primary.totalMs)} ms, backup ${Math.round(backup.totalMs)} ms; fence ${Number(fenced?.fenceMs).toFixed(1)} ms; primary wrote ${String(refused?.writesBeforeFence)} times, then conflict; noticed ${Number(refused?.noticedMsFromRefusal).toFixed(0)} ms after its refused write`);
}, 260_000);

afterAll(async () => {
  await tgtd?.stop();
});

const expectChecks = (run: GuestRun, names: string[]) => {
  expect(run.results.map((r) => r.check), run.log.slice(-3000)).toEqual([...names, 'done']);
  for (const r of run.results) expect(r.ok, JSON.stringify(r, null, 2)).toBe(true);
  expect(run.exitCode, run.log.slice(-3000)).toBe(0);
};

describe('two guests on one tgtd disk over iSCSI', () => {
  it('the backup sees the primary, fences it (PREEMPT where PREEMPT AND ABORT is rejected, reported), and holds the disk', () => {
    expectChecks(backup, ['backup: the shared disk', 'backup: sees the primary registered and holding the reservation', 'backup: fences the primary (PREEMPT: tgtd rejects PREEMPT AND ABORT, and the report says so), then holds the disk']);
  });

  it("the primary's next write gets RESERVATION CONFLICT, its reads still work, and it notices", () => {
    expectChecks(primary, ['primary: the shared disk', 'primary: joins and writes', 'primary: its next write after the fence gets RESERVATION CONFLICT, and it notices']);
  });
});
