// A mirrored-log primary with its MirrorWatch as its own process, for the test that SIGKILLs it
// (test/unit/log-mirror-watch.test.ts). Run:
//   node --import tsx test/mirror-watch-primary-child.ts DIR BACKUP_PORT KEY_HEX HB_KEY_HEX MAIN_PORT FAILSAFE_PORT PEER_MAIN_PORT PEER_FAILSAFE_PORT RECORDS
// Appends RECORDS records (each awaited), prints "appended N", then "state S" on every state change.
import { MirroredLog } from '../src/log/mirrored-log.js';
import { MirrorWatch } from '../src/log/mirror-watch.js';

const args = process.argv.slice(2);
if (args.length !== 9) {
  process.stderr.write('usage: mirror-watch-primary-child.ts DIR BACKUP_PORT KEY_HEX HB_KEY_HEX MAIN_PORT FAILSAFE_PORT PEER_MAIN_PORT PEER_FAILSAFE_PORT RECORDS\n');
  process.exit(2);
}
const [dir, backupPort, keyHex, hbKeyHex, main, failsafe, peerMain, peerFailsafe, records] = args as [string, string, string, string, string, string, string, string, string];
const H = '127.0.0.1';
const log = await MirroredLog.open({ dir, backup: { host: H, port: Number(backupPort) }, key: Buffer.from(keyHex, 'hex'), node: 'node-a', log: 'orders', ackTimeoutMs: 400, reconnect: { minMs: 10, maxMs: 100 } });
log.on('state', (s) => process.stdout.write(`state ${s}\n`));
await MirrorWatch.start({
  role: 'primary', node: 'node-a', peer: 'node-b', key: Buffer.from(hbKeyHex, 'hex'), intervalMs: 100, misses: 3, log,
  links: { main: { address: H, port: Number(main) }, failsafe: { address: H, port: Number(failsafe) } },
  peerLinks: { main: { address: H, port: Number(peerMain) }, failsafe: { address: H, port: Number(peerFailsafe) } },
});
for (let i = 0; i < Number(records); i++) await log.append(Buffer.from(`record ${i}`));
process.stdout.write(`appended ${records}\n`);
