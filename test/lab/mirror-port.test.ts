// The switch's port mirror (Lab.mirrorPort; seed 003 FIG. 1: the routing device copies the
// primary's traffic to the backup) on a learning bridge, as on a switched network: client c
// talks TCP to primary p, backup b captures on the mirror interface. b hears every segment of
// both directions, the same ones p's own eth0 does, and rebuilds both byte streams from the SYN
// byte for byte; b's eth0 hears none of them (the bridge switches: unicast goes to one port).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { Lab } from '../../src/lab/lab.js';
import type { LabEvent, NodeChild } from '../../src/lab/node-child.js';
import { TCP_FIN, TCP_SYN } from '../../src/native.js';
import { eventually } from './eventually.js';

const PEERS = fileURLToPath(new URL('fixtures/mirror-peers.ts', import.meta.url));
const CAPTURE = fileURLToPath(new URL('fixtures/mirror-capture.ts', import.meta.url));
const PORT = 7100;

interface Direction {
  synSeen: boolean;
  finSeen: boolean;
  segments: Array<{ seq: number; ack: number; flags: number; len: number }>;
  dataSegments: number;
  truncated: number;
  bytes: number;
  sha256: string;
  holes: number[];
}

let lab: Lab;
beforeAll(async () => {
  lab = await Lab.create({ hosts: ['c', 'p', 'b'] });
});
afterAll(async () => {
  await lab?.destroy();
});

let tag = 0;
async function report(capture: NodeChild): Promise<Record<string, Direction>> {
  const t = ++tag;
  capture.send({ cmd: 'report', tag: t });
  const r: LabEvent = await capture.waitFor('report', 5000, (e) => e.tag === t);
  expect((r.stats as { drops: number }).drops).toBe(0);
  return r.directions as Record<string, Direction>;
}

it('b hears every segment of c <-> p on the mirror, byte-exact from the SYN; nothing on its eth0', async () => {
  const t0 = performance.now();
  const { ifname } = await lab.mirrorPort('p', 'b');
  expect(ifname).toBe('mir0');
  // The capture interface: up, no IPv4 or IPv6 address.
  const addrs = (await lab.exec('b', 'ip', ['-o', 'addr', 'show', 'dev', ifname])).stdout.trim();
  expect(addrs).toBe('');

  const [c, p] = [lab.host('c'), lab.host('p')];
  const onMirror = lab.spawn('b', CAPTURE, ['--interface', ifname, '--port', String(PORT)]);
  const onEth0 = lab.spawn('b', CAPTURE, ['--interface', 'eth0', '--port', String(PORT)]);
  const atPrimary = lab.spawn('p', CAPTURE, ['--interface', 'eth0', '--port', String(PORT)]);
  await Promise.all([onMirror, onEth0, atPrimary].map((x) => x.waitFor('capturing')));

  const server = lab.spawn('p', PEERS, ['--role', 'server', '--address', p.ipv4, '--port', String(PORT), '--bytes', '48000']);
  await server.waitFor('listening');
  const client = lab.spawn('c', PEERS, ['--role', 'client', '--address', p.ipv4, '--port', String(PORT), '--bytes', '64000']);
  const [sd, cd] = await Promise.all([server.waitFor('done'), client.waitFor('done')]);
  expect(sd.receivedSha256).toBe(cd.sentSha256);
  expect(cd.receivedSha256).toBe(sd.sentSha256);

  const up = `${c.ipv4}:${String(cd.localPort)}>${p.ipv4}:${PORT}`;
  const down = `${p.ipv4}:${PORT}>${c.ipv4}:${String(cd.localPort)}`;
  // Both FINs seen in both captures (a block is handed over up to 2 ms late).
  let last: unknown;
  const complete = async (cap: NodeChild) => {
    const d = await report(cap);
    last = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, { ...v, segments: v.segments.length }]));
    return d[up]?.finSeen && d[down]?.finSeen ? d : undefined;
  };
  const truth = await eventually(() => complete(atPrimary), 5000, "p's capture to see both FINs").catch((e: Error) => {
    throw new Error(`${e.message}; last report ${JSON.stringify(last)}`);
  });
  const mirrored = await eventually(() => complete(onMirror), 5000, "b's mirror capture to see both FINs").catch((e: Error) => {
    throw new Error(`${e.message}; last report ${JSON.stringify(last)}`);
  });

  for (const [key, sent] of [[up, cd], [down, sd]] as const) {
    const m = mirrored[key]!;
    expect(m.synSeen, key).toBe(true);
    expect(m.holes, key).toEqual([]);
    expect(m.truncated, key).toBe(0);
    expect(m.bytes, key).toBe(sent.sent);
    expect(m.sha256, key).toBe(sent.sentSha256);
    // Every segment p's own interface carried, the same and in the same order.
    expect(m.segments, key).toEqual(truth[key]!.segments);
    expect(m.segments[0]!.flags & TCP_SYN, key).toBeTruthy();
    expect(m.segments.some((s) => s.flags & TCP_FIN), key).toBe(true);
  }
  // Nothing of the connection reached b's own port: the bridge learned p's and c's MACs.
  expect(await report(onEth0)).toEqual({});
  console.log(`mirror: ${mirrored[up]!.segments.length} segments c->p (${mirrored[up]!.dataSegments} with data, ${mirrored[up]!.bytes} bytes), ` +
    `${mirrored[down]!.segments.length} p->c (${mirrored[down]!.dataSegments} with data, ${mirrored[down]!.bytes} bytes); ${(performance.now() - t0).toFixed(0)} ms`);
}, 30_000);
