// A reliable order-matching primary as its own process, for the takeover benchmark that SIGKILLs it mid-load
// (bench/reliable-takeover.ts): a MirroredLog mirrored to the backup at BACKUP_PORT and
// a ReliableServer over it. Run: node --import tsx test/reliable-primary-child.ts DIR BACKUP_PORT KEY_HEX
// Prints {"port":N} once listening, then "state S" on every state change.
import { MirroredLog } from '../src/log/mirrored-log.js';
import { ReliableServer } from '../src/reliable/reliable-server.js';
import { ReliableState } from '../src/reliable/reliable-state.js';
import { orderMatchingApp } from '../docs/examples/order-matching/order-book.js';

const [dir, backupPort, keyHex] = process.argv.slice(2);
if (!dir || !backupPort || !keyHex) {
  process.stderr.write('usage: reliable-primary-child.ts DIR BACKUP_PORT KEY_HEX\n');
  process.exit(2);
}
const log = await MirroredLog.open({ dir, backup: { host: '127.0.0.1', port: Number(backupPort) }, key: Buffer.from(keyHex, 'hex'), node: 'node-a', log: 'orders', ackTimeoutMs: 1000, reconnect: { minMs: 10, maxMs: 100 } });
log.on('state', (s) => process.stdout.write(`state ${s}\n`));
const server = await ReliableServer.listen({ log, state: new ReliableState(orderMatchingApp), host: '127.0.0.1', port: 0, node: 'node-a', incarnation: log.incarnation });
server.on('rejected', ({ error }) => process.stderr.write(`rejected: ${error.message}\n`));
process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
process.on('SIGTERM', () => {
  void server.close().then(() => log.close()).then(() => process.exit(0));
});
