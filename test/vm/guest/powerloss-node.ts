// The guest's side of the power-loss test (test/vm/powerloss.test.ts): three logs under load at
// once on the guest's ext4 virtio disk, until the host SIGKILLs qemu (the power cut). Every
// acknowledged append is printed as it resolves ("TKO {c, l: LSN, i: sequence}"), so what the
// host saw acknowledged was acknowledged; lines lost with the guest are acknowledgements the host
// does not check.
//   case 1: a MirroredLog whose backup is never there (primary-only: each ack follows fdatasync);
//   case 2: a MirroredLog mirroring to the host's MirrorBackup (normal: an ack means the backup
//           holds the record), its state changes printed;
//   case 3: a MirrorBackup for the host's primary, its durable LSN printed as it moves.
// The load is bounded (records and time): a guest never killed ends it, prints "done" and
// exits, which the host reports as a failure to cut the power mid-load.
// Run compiled (an esbuild bundle, test/vm/guest-bundle.ts), not through tsx: quicker to start
// under TCG, and tsx's WASM lexer once crashed there.
import { readFileSync } from 'node:fs';
import { MirroredLog } from '../../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../../src/log/mirror-backup.js';
import { powerlossPayload } from './powerloss-payload.js';

const [disk, keyHex, hostBackupPort, guestBackupPort, loadMs, maxRecords] = process.argv.slice(2);
if (!disk || !keyHex || !hostBackupPort || !guestBackupPort || !loadMs || !maxRecords) {
  throw new Error('usage: powerloss-node DISK_DIR KEY_HEX HOST_BACKUP_PORT GUEST_BACKUP_PORT LOAD_MS MAX_RECORDS');
}
const key = Buffer.from(keyHex, 'hex');
const out = (r: Record<string, unknown>) => console.log(`TKO ${JSON.stringify(r)}`);
// Where the guest's time goes (seconds since its boot), for the host's report.
const uptime = () => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
out({ phase: 'script started', bootS: uptime(), nodeS: process.uptime() });
const APPENDERS = 3;
const end = Date.now() + Number(loadMs);

// Case 1's backup address: a port nothing in the guest listens on (every dial refused).
const primaryOnly = await MirroredLog.open({ dir: `${disk}/c1`, backup: { host: '127.0.0.1', port: 1 }, key, node: 'guest-1', log: 'powerloss-1' });
// 10.0.2.100 is qemu's forward to the host's backup. A generous ACK timeout: a TCG guest under
// load stalls for hundreds of ms, and a lost link would turn acks local (the host checks that
// the state stayed normal).
const mirrored = await MirroredLog.open({ dir: `${disk}/c2`, backup: { host: '10.0.2.100', port: Number(hostBackupPort) }, key, node: 'guest-2', log: 'powerloss-2', ackTimeoutMs: 5000 });
mirrored.on('state', (state, previous, why) => out({ c: 2, state, previous, why }));
mirrored.on('link', (info) => out({ c: 2, link: info.type, ...('reason' in info ? { reason: info.reason } : {}), ...('error' in info ? { linkError: info.error.message } : {}) }));
const backup = await MirrorBackup.listen({ dir: `${disk}/c3`, host: '10.0.2.15', port: Number(guestBackupPort), key, node: 'guest-3', log: 'powerloss-3' });
out({ c: 3, ready: true, bootS: uptime() });
let reported = -1;
const durableWatch = setInterval(() => {
  if (backup.durableLsn !== reported) out({ c: 3, d: (reported = backup.durableLsn) });
}, 20);

async function load(c: number, log: MirroredLog): Promise<void> {
  let next = 0;
  out({ phase: `case ${c}'s load`, bootS: uptime() });
  const appender = async () => {
    while (next < Number(maxRecords) && Date.now() < end) {
      const i = next++;
      try {
        const l = await log.append(powerlossPayload(c, i));
        out({ c, l, i });
        if (i === 0) out({ phase: `case ${c}'s first ack`, bootS: uptime() });
      } catch (err) {
        out({ c, i, error: (err as Error).message });
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: APPENDERS }, appender));
}

await Promise.all([load(1, primaryOnly), load(2, mirrored)]);
clearInterval(durableWatch);
out({ check: 'done', c1: primaryOnly.stats, c2: mirrored.stats });
await Promise.all([primaryOnly.close(), mirrored.close(), backup.close()]);
