// The output commit's netfilter queues (HeldTraffic) against a real kernel and iptables, in a lab
// host's namespace, with a client on another host across the learning bridge: what the service
// sends waits until released, and what comes in passes at once; one holder per queue; no rule
// outlives its owner, and a holder killed with SIGKILL does not stop its service (--queue-bypass).
import { afterEach, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { Lab } from '../../src/lab/lab.js';
import type { LabEvent, NodeChild } from '../../src/lab/node-child.js';

const HOLD_OPS = fileURLToPath(new URL('fixtures/hold-ops.ts', import.meta.url));
const PORT = 7011;
const QUEUE = 4100;

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

let nextReq = 1;
async function op(child: NodeChild, cmd: Record<string, unknown>): Promise<LabEvent> {
  const reqId = nextReq++;
  child.send({ ...cmd, reqId });
  return child.waitFor('result', 10_000, (e) => e.reqId === reqId);
}

async function holdOps(l: Lab, host: string): Promise<NodeChild> {
  const child = l.spawn(host, HOLD_OPS);
  await child.waitFor('ready');
  return child;
}

/** The output-commit rules in `host`'s mangle tables (IPv4 and IPv6). */
async function holdRules(l: Lab, host: string): Promise<string[]> {
  const lines: string[] = [];
  for (const cmd of ['iptables', 'ip6tables']) lines.push(...(await l.exec(host, cmd, ['-w', '-t', 'mangle', '-S'])).stdout.split('\n'));
  return lines.filter((line) => line.includes('NFQUEUE'));
}

/**
 * A client on `host`: connects to address:PORT, sends one line, and reports how long the echo
 * took (ms), or null when none came within waitMs. Its own process, bounded in time.
 */
async function echoAfter(l: Lab, host: string, address: string, waitMs: number): Promise<number | null> {
  const script = `
    const net = require('node:net');
    const t0 = performance.now();
    const s = net.connect(${PORT}, ${JSON.stringify(address)}, () => s.write('ping\\n'));
    const done = (v) => { console.log(JSON.stringify(v)); process.exit(0); };
    s.on('data', () => done(performance.now() - t0));
    s.on('error', (e) => done(e.code));
    setTimeout(() => done(null), ${waitMs});`;
  const r = JSON.parse((await l.exec(host, 'node', ['-e', script])).stdout.trim()) as number | string | null;
  if (typeof r === 'string') throw new Error(`client on ${host}: ${r}`);
  return r;
}

it('holds what the service sends until released, passes what comes in; one holder per queue; rules removed on close and swept after SIGKILL, whose service goes on', async () => {
  lab = await Lab.create({ hosts: ['a', 'b'] });
  const a = lab.host('a');
  const holder = await holdOps(lab, 'a');
  expect(await op(holder, { cmd: 'open', address: a.ipv4, port: PORT, queue: QUEUE })).toMatchObject({ ok: true });
  const rules = await holdRules(lab, 'a');
  expect(rules).toHaveLength(2); // ingress to QUEUE, egress to QUEUE + 1
  expect(rules.join('\n')).toMatch(new RegExp(`-A PREROUTING -d ${a.ipv4}/32 -p tcp .*--dport ${PORT} .*--queue-num ${QUEUE} --queue-bypass`));
  expect(rules.join('\n')).toMatch(new RegExp(`-A OUTPUT -s ${a.ipv4}/32 -p tcp .*--sport ${PORT} .*--queue-num ${QUEUE + 1} --queue-bypass`));

  // The SYN-ACK is held: the connect itself waits for a release.
  const pending = echoAfter(lab, 'b', a.ipv4, 5000);
  const until = Date.now() + 3000;
  while (((await op(holder, { cmd: 'stats' })).value as { heldNow: number }).heldNow === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  const held = (await op(holder, { cmd: 'stats' })).value as { heldNow: number; ingressSeen: number };
  expect(held.heldNow).toBeGreaterThan(0);
  expect(held.ingressSeen).toBeGreaterThan(0); // the SYN came in through the ingress queue
  await new Promise((r) => setTimeout(r, 300));
  const releasedAt = performance.now();
  // Release everything the service sent, as often as it sends, until the echo comes.
  const releasing = setInterval(() => void op(holder, { cmd: 'release' }), 5);
  try {
    const rtt = await pending;
    expect(rtt).not.toBeNull();
    // The client waited for the release: at least the 300 ms it was held.
    expect(rtt!).toBeGreaterThan(300);
    expect(performance.now() - releasedAt).toBeLessThan(2000);
  } finally {
    clearInterval(releasing);
  }

  // A second holder of the same queue: refused, clearly, and nothing of it stays.
  const second = await holdOps(lab, 'a');
  const refused = await op(second, { cmd: 'open', address: a.ipv4, port: PORT + 1, queue: QUEUE });
  expect(refused).toMatchObject({ ok: false, code: 'EPERM' });
  expect(String(refused.message)).toMatch(`netfilter queue ${QUEUE} is held by another process`);
  expect(await holdRules(lab, 'a')).toEqual(rules);

  // Closed: its rules gone, nothing held (the echo comes at once); the queue free for another
  // holder. (The first holder's echo server goes on serving PORT.)
  expect(await op(holder, { cmd: 'close' })).toMatchObject({ ok: true });
  expect(await holdRules(lab, 'a')).toEqual([]);
  expect(await echoAfter(lab, 'b', a.ipv4, 2000)).not.toBeNull();
  const third = await holdOps(lab, 'a');
  expect(await op(third, { cmd: 'open', address: a.ipv4, port: PORT, queue: QUEUE, serve: false })).toMatchObject({ ok: true });
  expect(await holdRules(lab, 'a')).toHaveLength(2);

  // Killed with SIGKILL while holding: its rules stay, but with nobody bound to the queues the
  // service's traffic passes (--queue-bypass): a new client is answered at once. The next
  // holder sweeps the dead one's rules.
  await third.kill(); // SIGKILL
  expect(await holdRules(lab, 'a')).toHaveLength(2);
  const rtt = await echoAfter(lab, 'b', a.ipv4, 2000);
  expect(rtt).not.toBeNull();
  expect(rtt!).toBeLessThan(200);
  const next = await holdOps(lab, 'a');
  expect(await op(next, { cmd: 'open', address: a.ipv4, port: PORT + 3, queue: QUEUE + 10 })).toMatchObject({ ok: true });
  const after = await holdRules(lab, 'a');
  expect(after).toHaveLength(2);
  expect(after.every((r) => r.includes(`--queue-num ${QUEUE + 10}`) || r.includes(`--queue-num ${QUEUE + 11}`))).toBe(true);
  await op(next, { cmd: 'close' });
}, 60_000);
