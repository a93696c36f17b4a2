// One node of a reliable order-matching pair as its own process, for tests (and BENCH=takeover) that kill and restart
// nodes many times (test/unit/reliable-chaos.test.ts): it starts as the primary (a MirroredLog
// mirrored to its peer, a ReliableServer over it) or as the backup (a MirrorBackup on its log
// directory: a returning primary resyncs there, seed 004 step 465; a hot standby, the book kept
// current as records arrive), and on "takeover" from stdin it takes over (nothing left to
// replay, then serve with the recovery signal) and dials its peer's mirror address
// so that the peer, when it returns, becomes its backup.
// Run: node --import tsx test/reliable-node-child.ts '{"node":..,"dir":..,"role":"primary"|"backup",
//   "mirrorPort":..,"peerMirrorPort":..,"clientPort":..,"keyHex":..}'
// Prints JSON lines: {"ev":"ready","heldLsn":N}, {"ev":"state","state":S}, {"ev":"resynced","cut":N},
// {"ev":"attached"|"refused",...} (a backup), {"ev":"link",...} (a primary's attach or refusal),
// {"ev":"serving","recoveredLsn":N,"takeoverMs":T,"replayed":R}, {"ev":"snapshot",...}, {"ev":"error",...}.
// Reads lines: "takeover", "snapshot", "close" (flush and close the log, then exit 0).
import { createInterface } from 'node:readline';
import { MirroredLog } from '../src/log/mirrored-log.js';
import { MirrorBackup } from '../src/log/mirror-backup.js';
import { takeOver } from '../src/log/takeover.js';
import { ReliableServer } from '../src/reliable/reliable-server.js';
import { ReliableState } from '../src/reliable/reliable-state.js';
import { orderMatchingApp, type OrderBook } from '../docs/examples/order-matching/order-book.js';

interface NodeConfig {
  node: string;
  dir: string;
  role: 'primary' | 'backup';
  mirrorPort: number;
  peerMirrorPort: number;
  clientPort: number;
  keyHex: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as NodeConfig;
const key = Buffer.from(config.keyHex, 'hex');
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const LINK = { ackTimeoutMs: 300, reconnect: { minMs: 10, maxMs: 100 } };
const peer = { host: '127.0.0.1', port: config.peerMirrorPort };

let state = new ReliableState<OrderBook>(orderMatchingApp);
let log: MirroredLog | null = null;
let backup: MirrorBackup | null = null;
let server: ReliableServer<OrderBook> | null = null;

function watch(l: MirroredLog): void {
  l.on('state', (s) => say({ ev: 'state', state: s }));
  l.on('failed', (e) => say({ ev: 'error', error: e.message }));
  // The primary's answers to its backup's HELLO (the fork decisions), for a test's diagnosis.
  l.on('link', (i) => {
    if (i.type === 'attached') say({ ev: 'link', type: i.type, fromLsn: i.fromLsn, nextLsn: l.nextLsn });
    else if (i.type === 'refused') say({ ev: 'link', type: i.type, refusal: i.refusal, reason: i.error.message, nextLsn: l.nextLsn });
  });
}

async function serve(recoveredLsn?: number): Promise<void> {
  server = await ReliableServer.listen({ log: log!, state, host: '127.0.0.1', port: config.clientPort, node: config.node, incarnation: log!.incarnation, ...(recoveredLsn !== undefined ? { recoveredLsn } : {}) });
  server.on('rejected', ({ error }) => say({ ev: 'error', error: `rejected: ${error.message}` }));
}

async function takeOverNow(): Promise<void> {
  const b = backup!;
  const t0 = performance.now();
  // The failure detector stands in the test; the guard in promote() still refuses a primary
  // heard recently, so wait for its connection to be gone (a killed or fenced process).
  while (b.attached && performance.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 5));
  // A hot standby: `apply` kept the book current, so the takeover replays nothing.
  const t = await takeOver(b, { key, node: config.node, log: 'orders', replay: (lsn, p) => state.replay(lsn, p), backup: peer, ...LINK });
  log = t.log;
  watch(log);
  await b.close();
  backup = null;
  await serve(t.promoted.nextLsn);
  say({ ev: 'serving', recoveredLsn: t.promoted.nextLsn, takeoverMs: performance.now() - t0, replayed: t.records, mismatches: state.stats.replayMismatches });
}

if (config.role === 'primary') {
  log = await MirroredLog.open({ dir: config.dir, backup: peer, key, node: config.node, log: 'orders', ...LINK });
  watch(log);
  await serve();
} else {
  backup = await MirrorBackup.listen({
    dir: config.dir, host: '127.0.0.1', port: config.mirrorPort, key, node: config.node, log: 'orders',
    apply: { reset: () => (state = new ReliableState<OrderBook>(orderMatchingApp)), record: (lsn, p) => state.replay(lsn, p) },
  });
  backup.on('resynced', ({ cut }) => say({ ev: 'resynced', cut: cut.cutRecords, heldLsn: backup?.heldLsn }));
  // What this backup was told (the fork decisions on its side), for a test's diagnosis.
  backup.on('attached', ({ fromLsn }) => say({ ev: 'attached', fromLsn }));
  backup.on('refused', ({ refusal, error }) => say({ ev: 'refused', refusal, reason: error.message }));
  backup.on('failed', (e) => say({ ev: 'error', error: e.message }));
}
say({ ev: 'ready', role: config.role, ...(backup ? { heldLsn: backup.heldLsn } : {}) });

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'takeover') void takeOverNow().catch((e: Error) => say({ ev: 'error', error: `takeover: ${e.message}` }));
  else if (line === 'close') void (async () => {
    await server?.close();
    await log?.close();
    await backup?.close();
    process.exit(0);
  })();
  else if (line === 'snapshot') say({ ev: 'snapshot', book: state.state.snapshot(), nextLsn: log?.nextLsn ?? null, mismatches: state.stats.replayMismatches });
});
