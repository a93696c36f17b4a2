// Records test/recorded/scenario.ts on a real target, inside the test guest: `lio` through the
// two LIO iSCSI nexuses (tcm_loop cannot complete PREEMPT AND ABORT), `tgtd` through the two
// iSCSI sessions to the host's tgtd. Prints one result line with the summary and both nodes'
// exchanges; test/vm/record-targets.ts writes it to test/recorded/<target>.json.
import { identify } from '../../../src/scsi/inquiry.js';
import { DeviceTransport, ScsiDevice } from '../../../src/scsi/transport.js';
import { runScenario } from '../../recorded/scenario.js';
import { RecordingTransport } from '../../recorded/transcript.js';
import { check } from './report.js';
import { initiatorOf, iscsiByInitiator, sgNodes } from './nexus.js';

const target = process.argv[2];
if (target !== 'lio' && target !== 'tgtd') throw new Error(`usage: record-scenario.ts lio|tgtd, not ${target}`);
const transports: DeviceTransport[] = [];
await check(`recorded on ${target}`, async () => {
  const disks: string[] = []; // tgtd's LUN 0 is a controller
  for (const sg of sgNodes()) {
    const t = new DeviceTransport(sg);
    transports.push(t);
    if ((await identify(new ScsiDevice(t, 5000))).peripheralType === 0) disks.push(sg);
  }
  const nexuses = iscsiByInitiator(disks);
  if (nexuses.length !== 2) return { ok: false, error: `expected two iSCSI nexuses to one disk, found ${nexuses.join(', ') || 'none'}` };
  const [a, b] = nexuses.map((p) => {
    const t = new DeviceTransport(p);
    transports.push(t);
    return new RecordingTransport(t);
  });
  const summary = await runScenario(a!, b!);
  return { ok: true, target, nexuses: { a: a!.name, b: b!.name }, initiators: nexuses.map(initiatorOf), summary, transcripts: { a: a!.exchanges, b: b!.exchanges } };
});
for (const t of transports) t.close();
