// A log mirror's backup as its own process, for tests that SIGKILL it mid-load
// (test/unit/log-mirror-faults.test.ts). Run: node --import tsx test/mirror-backup-child.ts DIR PORT KEY_HEX
// Prints {"port":N} once listening, then "held N" for every ACK *before* the ACK is written
// (stdout on a pipe is synchronous on Linux), so the parent knows every held LSN the primary
// can have been told, even after a SIGKILL. SIGTERM closes it cleanly.
import { MirrorBackup } from '../src/log/mirror-backup.js';

const [dir, port, keyHex] = process.argv.slice(2);
if (!dir || port === undefined || !keyHex) {
  process.stderr.write('usage: mirror-backup-child.ts DIR PORT KEY_HEX\n');
  process.exit(2);
}
const backup = await MirrorBackup.listen({ dir, host: '127.0.0.1', port: Number(port), key: Buffer.from(keyHex, 'hex'), node: 'child-b', log: 'orders' });
backup.on('ack', ({ heldLsn }) => process.stdout.write(`held ${heldLsn}\n`));
backup.on('rejected', ({ error }) => process.stderr.write(`rejected: ${error.message}\n`));
process.stdout.write(`${JSON.stringify({ port: backup.port, held: backup.heldLsn })}\n`);
process.on('SIGTERM', () => {
  void backup.close().then(() => process.exit(0));
});
