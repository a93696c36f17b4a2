// `npm run record:scsi`: records test/recorded/scenario.ts on LIO (iSCSI fabric, in a guest) and
// on the host's tgtd (two iSCSI sessions from one guest), both guests at once, and writes
// test/recorded/lio.json and tgtd.json for the unit tests to replay. Run it again when the
// scenario changes; the unit test says so when a replay diverges.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { guestImage } from './guest-image.js';
import { runGuest, type GuestRun } from './run-guest.js';
import { startTgtd } from './tgtd.js';

const IQN = 'iqn.2026-11.io.takeover';
const job = (target: string) => `exec node --import tsx test/vm/guest/record-scenario.ts ${target}`;
const tgtd = await startTgtd({ target: `${IQN}:recorded`, sizeMb: 16, portals: 2 });
try {
  const [lio, tgt] = await Promise.all([
    runGuest({ setup: ['tcm_loop', 'lio_iscsi'], job: job('lio'), timeoutMs: 240_000 }),
    runGuest({ setup: [], iscsi: { portals: tgtd.portals, target: tgtd.target, initiators: [`${IQN}:a`, `${IQN}:b`] }, job: job('tgtd'), timeoutMs: 240_000 }),
  ]);
  const tgtVersion = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'tgt'], { encoding: 'utf8' });
  const save = (name: string, run: GuestRun, target: string) => {
    const r = run.results[0];
    if (run.exitCode !== 0 || !r?.ok) throw new Error(`recording on ${name} failed: ${JSON.stringify(r)}\n${run.log.slice(-3000)}`);
    const out = new URL(`../recorded/${name}.json`, import.meta.url).pathname;
    writeFileSync(out, `${JSON.stringify({ target, guestKernel: guestImage().version, nexuses: r.nexuses, summary: r.summary, transcripts: r.transcripts }, null, 1)}\n`);
    console.log(`${out}: ${(r.transcripts as { a: unknown[]; b: unknown[] }).a.length} + ${(r.transcripts as { a: unknown[]; b: unknown[] }).b.length} exchanges`);
  };
  save('lio', lio, 'LIO (Linux target, fileio backstore) over iSCSI, in the guest kernel');
  save('tgtd', tgt, `tgtd ${tgtVersion} (Debian tgt) on the host, over iSCSI from the guest`);
} finally {
  await tgtd.stop();
}
