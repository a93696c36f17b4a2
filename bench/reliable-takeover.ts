// `BENCH=takeover`: the reliable order-matching service's primary SIGKILLed under load, on
// loopback: the time from the kill to the takeover done (seed FIG. 13 steps 426-428: promote,
// flush, reopen, replay), to the recovery signal (the first client greeted with RECOVERED,
// step 429-530) and to the first message resent after it answered (step 540). The primary is a
// child process (test/reliable-primary-child.ts), the backup and 10
// clients (4 requests in flight each) are this process. The takeover is called as soon as the
// child is reaped and the backup has seen its connection end: no failure detector is in these times (it would add its detection time).
// Measured, no baseline yet (PostgreSQL synchronous replication is the issue's, not built).
// Bounded: 5 rounds of 4,000 orders, the kill after a random 20-80 % of them. No lab, no root.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MirrorBackup } from '../src/log/mirror-backup.js';
import { takeOver } from '../src/log/takeover.js';
import { ReliableClient } from '../src/reliable/reliable-client.js';
import { ReliableServer } from '../src/reliable/reliable-server.js';
import { ReliableState } from '../src/reliable/reliable-state.js';
import { encodeOrder, orderMatchingApp } from '../docs/examples/order-matching/order-book.js';
import { freePort } from '../test/free-port.js';

const KEY = Buffer.from('mirror-test-key-0123456789abcdef');
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'reliable-primary-child.ts');
const ROUNDS = 5;
const CLIENTS = 10;
const PER_CLIENT = 400;
const WINDOW = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Times {
  takeover: number;
  signal: number;
  firstAnswer: number;
  records: number;
}

async function round(root: string, i: number): Promise<Times> {
  const backup = await MirrorBackup.listen({ dir: path.join(root, `b${i}`), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
  const servicePort = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, path.join(root, `p${i}`), String(backup.port), KEY.toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let timer: NodeJS.Timeout | undefined;
  const primaryPort = await new Promise<number>((resolve, reject) => {
    let port = 0;
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      if (!port) port = Number(/"port":(\d+)/.exec(buf)?.[1] ?? 0);
      if (port && buf.includes('state normal')) resolve(port);
    });
    timer = setTimeout(() => reject(new Error('the primary child did not become normal in 20 s')), 20_000);
  }).finally(() => clearTimeout(timer));
  const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, c) => ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: primaryPort }, { host: '127.0.0.1', port: servicePort }], clientId: `b${i}-c${c}`, backoff: { minMs: 5, maxMs: 40 } })));
  let answered = 0;
  let after = 0; // replies after the new server started (not the dead primary's last bytes)
  let serving = false;
  let firstAnswer = 0;
  let signal = 0;
  for (const c of clients) c.on('connected', (x) => { if (x.recoveredLsn !== null && !signal) signal = performance.now(); });
  const load = clients.map(async (c, k) => {
    let n = 0;
    await Promise.all(Array.from({ length: WINDOW }, async () => {
      while (n < PER_CLIENT) {
        n++;
        await c.request(encodeOrder({ side: (n + k) % 2 ? 'buy' : 'sell', price: 100 + ((n * 7 + k) % 5), qty: 1 + (n % 9) }));
        answered++;
        if (serving && !after++) firstAnswer = performance.now();
      }
    }));
  });
  const killAt = Math.floor(CLIENTS * PER_CLIENT * (0.2 + 0.6 * Math.random()));
  while (answered < killAt) await sleep(1);
  child.kill('SIGKILL');
  const killed = performance.now();
  await exited;
  while (backup.attached) await sleep(1); // the backup sees the connection end (promote() refuses before)
  const state = new ReliableState(orderMatchingApp);
  const t = await takeOver(backup, { key: KEY, node: 'node-b', log: 'orders', replay: (lsn, p) => state.replay(lsn, p) });
  const done = performance.now();
  serving = true;
  const server = await ReliableServer.listen({ log: t.log, state, host: '127.0.0.1', port: servicePort, node: 'node-b', incarnation: t.log.incarnation, recoveredLsn: t.promoted.nextLsn });
  await Promise.all(load);
  for (const c of clients) await c.close();
  await server.close();
  await t.log.close();
  await backup.close();
  return { takeover: done - killed, signal: signal - killed, firstAnswer: firstAnswer - killed, records: t.records };
}

export async function reliableTakeover(out: (s: string) => void): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'bench-takeover-'));
  try {
    const runs: Times[] = [];
    for (let i = 0; i < ROUNDS; i++) runs.push(await round(root, i));
    const med = (f: (t: Times) => number) => runs.map(f).sort((a, b) => a - b)[Math.floor(runs.length / 2)]!;
    const range = (f: (t: Times) => number) => `${Math.min(...runs.map(f)).toFixed(1)}-${Math.max(...runs.map(f)).toFixed(1)}`;
    out(`reliable takeover on loopback, primary SIGKILLed under ${CLIENTS} clients x ${WINDOW} in flight, ${ROUNDS} rounds (${range((t) => t.records).replace(/\.0/g, '')} records replayed), median (range) ms from the kill:`);
    out(`  takeover done (reaped, promote, flush, reopen, replay): ${med((t) => t.takeover).toFixed(1)} (${range((t) => t.takeover)})`);
    out(`  recovery signal (first client greeted with RECOVERED): ${med((t) => t.signal).toFixed(1)} (${range((t) => t.signal)})`);
    out(`  first resent message answered:                         ${med((t) => t.firstAnswer).toFixed(1)} (${range((t) => t.firstAnswer)})`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// Run alone: node --import tsx bench/reliable-takeover.ts
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await reliableTakeover((s) => process.stdout.write(`${s}\n`));
