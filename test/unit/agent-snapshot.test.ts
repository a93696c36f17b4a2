// A subscriber that connects gets the current state first, then live events (list, then watch):
// on the notification endpoint (raw, through subscribe(), in FAN after a format request) and on
// the control socket (`takeover events --follow`, a real CLI process). The state it gets is the
// picture `status` shows; an agent that restarts is followed from its state again; two agents
// number a peer's death alike, in the live event and in a later subscriber's state.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, type AgentStatus } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import { parseFan } from '../../src/events/fan-line.js';
import { decodeEventJson, type ServiceEvent } from '../../src/events/service-event.js';
import { subscribe } from '../../src/events/subscribe.js';
import { startCli } from '../cli-process.js';
import { eventPicture, statusPicture } from '../state-picture.js';
import { testPort } from '../free-port.js';

let dir: string;
const agents: Agent[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-snap-'));
});
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  rmSync(dir, { recursive: true, force: true });
});

const port = () => testPort();

function config(self: string, hb: number, peers: Array<{ node: string; port: number }> = [], over: Record<string, unknown> = {}) {
  return validateConfig({
    cluster: 'unit', node: self, database: 'db', key: 'a key of sixteen+ bytes', control: path.join(dir, `${self}.sock`),
    heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: hb }] },
    peers: peers.map((p) => ({ node: p.node, links: [{ id: 0, address: '127.0.0.1', port: p.port }] })),
    notify: { host: '127.0.0.1', port: 0 },
    quorum: { twoNode: true }, // two agents without fencing: a silent peer is acted on
    ...over,
  });
}

async function started(c: ReturnType<typeof config>) {
  const a = await Agent.create(c);
  agents.push(a);
  const published: ServiceEvent[] = [];
  a.on('published', (e) => published.push(e));
  await a.start();
  return { agent: a, published };
}

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** How many events a snapshot of this status holds: this node, each peer, instance, member and service. */
function snapshotSize(s: AgentStatus): number {
  return 1 + s.peers.length + s.instances.length + s.services.reduce((n, svc) => n + svc.members.length + 1, 0);
}

/** A raw subscriber: every line the endpoint sends. */
function rawSubscriber(portNo: number) {
  const sock = net.connect({ host: '127.0.0.1', port: portNo });
  const lines: string[] = [];
  createInterface({ input: sock }).on('line', (l) => lines.push(l));
  return { sock, lines };
}

describe('the state first, then live events', () => {
  it('on the endpoint: the snapshot is the picture status shows, repeats the published events, and live events follow', async () => {
    const instances = [{ name: 'i1', node: 'a', command: ['sleep', '600'], role: 'primary' }, { name: 'i2', node: 'a', command: ['sleep', '600'] }];
    const services = [{ name: 'sales', members: ['i1', 'i2'] }, { name: 'hr', members: ['i2'] }];
    const { agent, published } = await started(config('a', port(), [], { instances, services }));
    await until(() => agent.status().instances.every((i) => i.state === 'up'));
    await agent.serviceChange('hr', 'stop');
    const raw = rawSubscriber(agent.notifyPort);
    const n = snapshotSize(agent.status());
    await until(() => raw.lines.length === n);
    const snapshot = raw.lines.map((l) => decodeEventJson(l));
    expect(snapshot.every((e) => e.snapshot === true)).toBe(true);
    expect(eventPicture(snapshot)).toEqual(statusPicture(agent.status()));
    expect(eventPicture(snapshot)).toMatchObject({ 'member hr/i2': false, 'service hr': false, 'member sales/i2': true, 'service sales': true });
    // What was published is repeated as it was (a subscriber that saw it drops the repeat).
    const stopped = published.find((e) => e.type === 'service_member' && e.service === 'hr' && e.status === 'DOWN')!;
    expect(snapshot.find((e) => e.type === 'service_member' && e.service === 'hr')).toEqual({ ...stopped, cardinality: 0, snapshot: true });
    const boot = published.find((e) => e.type === 'instance' && e.instance === 'i1' && e.status === 'UP')!;
    expect(snapshot.find((e) => e.type === 'instance' && e.instance === 'i1')).toMatchObject({ incarnation: boot.incarnation, reason: 'boot', role: 'primary' });
    // Then the live events, unmarked.
    const before = published.length;
    await agent.serviceChange('hr', 'start');
    const live = published.slice(before);
    expect(live.map((e) => `${e.type} ${e.status}`)).toEqual(['service_member COMING_UP', 'service_member UP', 'service UP']);
    await until(() => raw.lines.length === n + live.length);
    expect(raw.lines.slice(n).map((l) => decodeEventJson(l))).toEqual(live);

    // A format request sends the state again, in that format.
    raw.sock.write('{"format":"oracle"}\n');
    await until(() => raw.lines.length === n + live.length + n);
    const again = raw.lines.slice(n + live.length).map((l) => parseFan(l));
    expect(again.every((e) => e.snapshot === true)).toBe(true);
    expect(eventPicture(again)).toEqual(statusPicture(agent.status()));
    raw.sock.destroy();
  });

  it('subscribe(): the state on connect, and again when the agent restarts, taking once what it already had', async () => {
    const notify = port();
    const c = config('a', port(), [], { notify: { host: '127.0.0.1', port: notify }, instances: [{ name: 'i1', node: 'a', command: ['sleep', '600'] }], services: [{ name: 'sales', members: ['i1'] }] });
    let { agent, published } = await started(c);
    await until(() => published.length === 3); // instance, member and service UP
    const ac = new AbortController();
    const seen: ServiceEvent[] = [];
    const reading = (async () => {
      for await (const e of subscribe({ agents: [{ host: '127.0.0.1', port: notify }], signal: ac.signal, retryMs: 20 })) seen.push(e);
    })();
    await until(() => seen.length === snapshotSize(agent.status()));
    expect(eventPicture(seen)).toEqual(statusPicture(agent.status()));
    const before = seen.length;
    // The agent restarts: its boot events are published before the subscriber is back.
    await agent.stop();
    agents.splice(agents.indexOf(agent), 1);
    ({ agent, published } = await started(c));
    await until(() => published.length === 3);
    await until(() => agent.server.subscriberCount === 1);
    // Until the new life's state has arrived (its instance UP, and the service after it: the
    // old life's planned stop may have left the picture's instance UP and added events, so
    // neither says by itself that the new state is in), then a while for any extra copy.
    const bootUp = published.find((e) => e.type === 'instance')!.incarnation;
    await until(() => {
      const i = seen.findIndex((e, k) => k >= before && e.type === 'instance' && e.status === 'UP' && e.incarnation >= bootUp);
      return i >= 0 && seen.slice(i).some((e) => e.type === 'service');
    });
    await new Promise((r) => setTimeout(r, 100));
    // The new life's UP events reached the subscriber once each (from the state), and its
    // picture is the agent's again.
    const after = seen.slice(before);
    expect(after.filter((e) => e.type === 'instance' && e.status === 'UP')).toHaveLength(1);
    // (The old life's instance DOWN of its planned stop may come first: the UP is the new life's.)
    expect(after.find((e) => e.type === 'instance' && e.status === 'UP')!.incarnation).toBe(published.find((e) => e.type === 'instance')!.incarnation);
    expect(eventPicture(seen)).toEqual(statusPicture(agent.status()));
    ac.abort();
    await reading;
  });

  it('takeover events --follow (the control socket, a CLI process): the state, the same as status, then live events', async () => {
    const { agent, published } = await started(config('a', port(), [], { instances: [{ name: 'i1', node: 'a', command: ['sleep', '600'] }], services: [{ name: 'sales', members: ['i1'] }] }));
    await until(() => published.some((e) => e.type === 'service_member' && e.status === 'UP'));
    const cli = startCli(['events', '--follow', '--control', path.join(dir, 'a.sock')]);
    try {
      const n = snapshotSize(agent.status());
      const lines = () => cli.stdout().split('\n').filter(Boolean);
      await until(() => lines().length === n, 15_000);
      const snapshot = lines().map((l) => decodeEventJson(l));
      expect(snapshot.every((e) => e.snapshot === true)).toBe(true);
      expect(eventPicture(snapshot)).toEqual(statusPicture(agent.status()));
      const before = published.length;
      await agent.serviceChange('sales', 'stop');
      const live = published.slice(before);
      expect(live.map((e) => `${e.type} ${e.status}`)).toEqual(['service_member GOING_DOWN', 'instance DOWN', 'service_member DOWN', 'service DOWN']);
      await until(() => lines().length === n + live.length);
      expect(lines().slice(n).map((l) => decodeEventJson(l))).toEqual(live);
    } finally {
      cli.child.kill('SIGTERM');
      await cli.done;
    }
  });

  it('two agents: the peer death a subscriber gets live, a later subscriber gets in the state with the same number', async () => {
    const [pa, pb] = [port(), port() + 1];
    const { agent: b, published } = await started(config('b', pb, [{ node: 'a', port: pa }]));
    const { agent: a } = await started(config('a', pa, [{ node: 'b', port: pb }]));
    await until(() => published.some((e) => e.type === 'node' && e.node === 'a' && e.status === 'UP'));
    const first = rawSubscriber(b.notifyPort);
    await until(() => first.lines.length === 2);
    const up = published.find((e) => e.type === 'node' && e.node === 'a')!;
    expect(first.lines.map((l) => decodeEventJson(l))).toEqual([
      { type: 'node', status: 'UP', node: 'b', reason: 'unknown', incarnation: 0, timestamp: expect.any(String), snapshot: true },
      { ...up, snapshot: true },
    ]);
    a.heartbeat.stop(); // a falls silent (a stop() would be a planned departure: no DOWN)
    await until(() => published.some((e) => e.type === 'node' && e.node === 'a' && e.status === 'DOWN'));
    const down = published.find((e) => e.type === 'node' && e.node === 'a' && e.status === 'DOWN')!;
    expect(down.incarnation).toBeGreaterThan(up.incarnation);
    await until(() => first.lines.length === 3);
    expect(decodeEventJson(first.lines[2]!)).toEqual(down);
    const later = rawSubscriber(b.notifyPort);
    await until(() => later.lines.length === 2);
    expect(decodeEventJson(later.lines[1]!)).toEqual({ ...down, snapshot: true });
    expect(eventPicture(later.lines.map((l) => decodeEventJson(l)))).toEqual(statusPicture(b.status()));
    first.sock.destroy();
    later.sock.destroy();
  });
});
