// PeerTakeover's order of work: `before` (the agent's fence of the dead peer) must succeed
// before anything of the peer's is touched; a failed fence means no takeover, reported. Then a
// leased address is waited out, and a wait that ends in `abandon` touches nothing; then the link
// is probed, and the address is added only once nobody answers for it.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { PeerTakeover } from '../../src/agent/peer-takeover.js';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import type { FlowTracker } from '../../src/net/flow-tracker.js';

describe('PeerTakeover', () => {
  it('a failing `before` (fencing) stops the takeover: nothing is touched, the error is reported', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const touched: string[] = [];
    // Any use of the tracker would mean closePeers ran.
    const tracker = new Proxy({}, { get: (_, k) => (touched.push(String(k)), undefined) }) as unknown as FlowTracker;
    const calls: string[] = [];
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 5432 }, tracker, interface: 'nowhere0', prefixLength: 24,
      before: async (down) => {
        calls.push(down.node);
        throw new Error('fencing a failed: /dev/sdb: RESERVATION CONFLICT');
      },
    });
    const failed = new Promise<Error>((resolve) => plan.once('failed', resolve));
    plan.on('done', () => calls.push('done'));
    events.emit('event', { kind: 'node-down', node: 'b', incarnation: 1n, at: 0, lastHeardAt: 0 }); // not this plan's peer
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 1n, at: 0, lastHeardAt: 0 });
    expect((await failed).message).toMatch(/fencing a failed/);
    expect(calls).toEqual(['a']);
    expect(touched).toEqual([]);
    plan.close();
  });

  it('a leased address: after `before`, the wait for the lease; abandoned (the peer holds the address again): nothing touched, said once', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const touched: string[] = [];
    const tracker = new Proxy({}, { get: (_, k) => (touched.push(String(k)), undefined) }) as unknown as FlowTracker;
    const calls: string[] = [];
    let release: (v: { kind: 'abandon'; why: string }) => void = () => {};
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 5432 }, tracker, interface: 'nowhere0', prefixLength: 24,
      before: async () => void calls.push('fence'),
      leases: {
        waitOut: (peer, address, decidedAt, onWait) => {
          calls.push(`wait ${peer} ${address} ${decidedAt}`);
          onWait?.({ kind: 'wait', until: decidedAt + 7000, seconds: 5 });
          return new Promise((r) => (release = r));
        },
      },
    });
    const waiting: unknown[] = [];
    plan.on('waiting', (w) => waiting.push(w));
    plan.on('done', () => calls.push('done'));
    plan.on('failed', () => calls.push('failed'));
    const abandoned = new Promise((resolve) => plan.once('abandoned', resolve));
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 1n, at: 1000, lastHeardAt: 675 });
    await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual(['fence', 'wait a 10.9.9.9 1000']);
    expect(plan.busy).toBe(true);
    expect(waiting).toEqual([{ down: expect.objectContaining({ node: 'a', at: 1000 }), address: '10.9.9.9', seconds: 5, until: 8000 }]);
    // Another node-down of the same peer while it waits starts nothing more.
    events.emit('event', { kind: 'node-down', node: 'a', incarnation: 2n, at: 1500, lastHeardAt: 1500 });
    release({ kind: 'abandon', why: 'a is alive and holds 10.9.9.9' });
    expect(await abandoned).toEqual({ down: expect.objectContaining({ at: 1000 }), address: '10.9.9.9', why: 'a is alive and holds 10.9.9.9', at: expect.any(Number) });
    await plan.settled();
    expect(calls).toEqual(['fence', 'wait a 10.9.9.9 1000']);
    expect(touched).toEqual([]);
    expect(plan.busy).toBe(false);
    await plan.close();
  });

  describe('after the lease: the probe of the link', () => {
    function leasedPlan(probe: ConstructorParameters<typeof PeerTakeover>[0]['probe'], verdict: 'waited' | 'no lease' = 'waited') {
      const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
      const touched: string[] = [];
      const tracker = new Proxy({}, { get: (_, k) => (touched.push(String(k)), undefined) }) as unknown as FlowTracker;
      const calls: string[] = [];
      let abandonedWhy: string | undefined;
      const plan = new PeerTakeover({
        heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 5432 }, tracker, interface: 'nowhere0', prefixLength: 24,
        leases: {
          waitOut: async () => (calls.push('wait'), verdict === 'waited' ? { kind: 'go', waited: { seconds: 5 } } : { kind: 'go' }),
          abandoned: () => abandonedWhy,
        },
        ...(probe ? { probe } : {}),
      });
      const out = { held: [] as unknown[], abandoned: [] as unknown[], failed: [] as Error[], done: 0 };
      plan.on('held', (h) => out.held.push(h));
      plan.on('abandoned', (a) => out.abandoned.push(a));
      plan.on('failed', (e) => out.failed.push(e));
      plan.on('done', () => out.done++);
      const down = () => events.emit('event', { kind: 'node-down', node: 'a', incarnation: 1n, at: 1000, lastHeardAt: 675 });
      return { plan, touched, calls, out, down, abandon: (why: string) => void (abandonedWhy = why) };
    }

    it('after the wait, before anything is touched: the probe is asked for the address on the takeover\'s interface; its holder said; gone: the takeover goes on', async () => {
      const requests: unknown[] = [];
      const t = leasedPlan(async (req) => {
        t.calls.push('probe');
        requests.push({ ...req, stop: typeof req.stop, onHeld: typeof req.onHeld });
        expect(t.touched).toEqual([]);
        req.onHeld?.({ peer: 'a', address: '10.9.9.9', mac: '02:00:00:00:00:01', kind: 'arp-reply', at: 9000, pastLeaseMs: 3000 });
        expect(req.stop?.()).toBeUndefined();
        return { kind: 'gone', probes: 4, ms: 400, held: { macs: ['02:00:00:00:00:01'], answers: 3, lastAt: 9200, pastLeaseMs: 3200 } };
      });
      t.down();
      await new Promise((r) => setTimeout(r, 10));
      await t.plan.settled();
      expect(t.calls).toEqual(['wait', 'probe']);
      expect(requests).toEqual([{ peer: 'a', address: '10.9.9.9', interface: 'nowhere0', decidedAt: 1000, seconds: 5, stop: 'function', onHeld: 'function' }]);
      expect(t.out.held).toEqual([{ down: expect.objectContaining({ node: 'a', at: 1000 }), peer: 'a', address: '10.9.9.9', mac: '02:00:00:00:00:01', kind: 'arp-reply', at: 9000, pastLeaseMs: 3000 }]);
      expect(t.touched.length).toBeGreaterThan(0); // closePeers ran (and failed on the fake tracker)
      expect(t.out.abandoned).toEqual([]);
      await t.plan.close();
    });

    it('stopped (the peer holds its address again, or the agent stops): abandoned with the reason, nothing touched', async () => {
      const t = leasedPlan(async (req) => {
        t.abandon('a is alive and holds 10.9.9.9');
        return { kind: 'stopped', why: req.stop?.() ?? '' };
      });
      t.down();
      await new Promise((r) => setTimeout(r, 10));
      await t.plan.settled();
      expect(t.out.abandoned).toEqual([{ down: expect.objectContaining({ at: 1000 }), address: '10.9.9.9', why: 'a is alive and holds 10.9.9.9', at: expect.any(Number) }]);
      expect(t.touched).toEqual([]);
      expect(t.out.failed).toEqual([]);
      await t.plan.close();
    });

    it('still held past the bound: the takeover fails with the probe\'s error (who answered), nothing touched', async () => {
      const t = leasedPlan(async () => {
        throw Object.assign(new Error('10.9.9.9 is still held on the link (a\'s): answered by 02:00:00:00:00:01 in 101 of 101 probe rounds over 10000 ms; not added'), { code: 'ERR_ADDRESS_HELD' });
      });
      t.down();
      await new Promise((r) => setTimeout(r, 10));
      await t.plan.settled();
      expect(t.out.failed.map((e) => e.message)).toEqual([expect.stringContaining('answered by 02:00:00:00:00:01')]);
      expect(t.touched).toEqual([]);
      await t.plan.close();
    });

    it('no lease was waited out (none heard, or long run out): no probe', async () => {
      let probed = 0;
      const t = leasedPlan(async () => (probed++, { kind: 'gone', probes: 1, ms: 100 }), 'no lease');
      t.down();
      await new Promise((r) => setTimeout(r, 10));
      await t.plan.settled();
      expect(probed).toBe(0);
      expect(t.touched.length).toBeGreaterThan(0);
      await t.plan.close();
    });
  });
});

describe('PeerTakeover with continue', () => {
  const down = { kind: 'node-down' as const, node: 'a', incarnation: 1n, at: 0, lastHeardAt: 0 };
  const plugin = { name: 'test', createTracker: () => { throw new Error('unused'); }, createReplyCounter: () => ({ push: () => [], broken: null }) };
  /** A local upstream that accepts connections (the promoted service), closed after the test. */
  async function listening(): Promise<net.Server> {
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return server;
  }
  const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;
  const stats = () => ({ connections: 0, refused: 0, unknownSegments: 0, captureLosses: 0, captureDrops: 0 });

  it('fences, then promotes, then takes the shadow\'s plans (nothing of the peer\'s touched before); a fresh shadow follows the peer afterwards', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const calls: string[] = [];
    const tracker = new Proxy({}, { get: (_, k) => (calls.push(`tracker.${String(k)}`), undefined) }) as unknown as FlowTracker;
    const upstream = await listening();
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 6379 }, tracker, interface: 'nowhere0', prefixLength: 24,
      before: async () => void calls.push('fence'),
      continue: {
        openShadow: () => {
          calls.push('shadow opened');
          return {
            // No plans: what follows (the address on an interface that does not exist) fails and ends the test.
            plans: async () => (calls.push('plans'), []),
            close: () => void calls.push('shadow closed'),
            stats,
          };
        },
        upstream: { host: '127.0.0.1', port: portOf(upstream) },
        plugin,
        promote: async () => void calls.push('promote'),
      },
    });
    const failed = new Promise<Error>((resolve) => plan.once('failed', resolve));
    events.emit('event', down);
    // The continue fails on the address (ENODEV), and so does the close path that follows it.
    expect((await failed).message).toMatch(/the continue failed: .*ENODEV.*; then closing the connections failed/);
    const own = () => calls.filter((c) => !c.startsWith('tracker.'));
    // The spent shadow is closed and a fresh one opened a moment later (not while relays start).
    expect(own()).toEqual(['shadow opened', 'fence', 'promote', 'plans']);
    for (const end = Date.now() + 3000; own().length < 6 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    expect(own()).toEqual(['shadow opened', 'fence', 'promote', 'plans', 'shadow closed', 'shadow opened']);
    // Nothing of the peer's connections was touched before the plans: only the close path did.
    expect(calls.findIndex((c) => c.startsWith('tracker.'))).toBeGreaterThan(calls.indexOf('plans'));
    await plan.close();
    expect(calls.at(-1)).toBe('shadow closed');
    upstream.close();
  });

  it('an agent closed while a takeover\'s spent shadow waits to be replaced closes it, and opens none', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const calls: string[] = [];
    const upstream = await listening();
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 6379 }, tracker: {} as FlowTracker, interface: 'nowhere0', prefixLength: 24,
      continue: {
        openShadow: () => (calls.push('shadow opened'), { plans: async () => [], close: () => void calls.push('shadow closed'), stats }),
        upstream: { host: '127.0.0.1', port: portOf(upstream) },
        plugin,
      },
    });
    const failed = new Promise<Error>((resolve) => plan.once('failed', resolve));
    events.emit('event', down);
    await failed;
    await plan.close();
    expect(calls).toEqual(['shadow opened', 'shadow closed']);
    await new Promise((r) => setTimeout(r, 1300)); // past the reopen's delay
    expect(calls).toEqual(['shadow opened', 'shadow closed']);
    upstream.close();
  });

  for (const [name, promote, upstreamPort, error, plansFail] of [
    ['a promotion that fails', async () => { throw new Error('promote command "redis-cli REPLICAOF NO ONE" exited with 1'); }, undefined, /the local service was not promoted: promote command/, false],
    ['an upstream that refuses connections', async () => undefined, 'closed', /the upstream 127\.0\.0\.1:\d+ does not accept connections \(ECONNREFUSED\)/, false],
    ['a shadow whose plans fail', async () => undefined, undefined, /the continue failed: ENOMEM: the ring/, true],
  ] as const) {
    it(`${name} continues nothing: its error is what the takeover reports, the close path (closePeers) runs instead, and a fresh shadow follows the peer`, async () => {
      const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
      const calls: string[] = [];
      // closePeers runs on the tracker: a tracker with no flows, on an interface that does not
      // exist, fails at once: that failure is what shows the close path was taken.
      const tracker = new Proxy({}, { get: (_, k) => (calls.push(`tracker.${String(k)}`), () => []) }) as unknown as FlowTracker;
      const upstream = await listening();
      const port = portOf(upstream);
      if (upstreamPort === 'closed') await new Promise((r) => upstream.close(r));
      const plan = new PeerTakeover({
        heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 6379 }, tracker, interface: 'nowhere0', prefixLength: 24,
        continue: {
          openShadow: () => (calls.push('shadow opened'), {
            plans: async () => {
              calls.push('plans');
              if (plansFail) throw new Error('ENOMEM: the ring could not be set up');
              return [];
            },
            close: () => void calls.push('shadow closed'),
            stats,
          }),
          upstream: { host: '127.0.0.1', port },
          plugin,
          promote,
        },
      });
      // closePeers fails on the missing interface: the failure carries why nothing was continued.
      const failed = new Promise<Error>((resolve) => plan.once('failed', resolve));
      events.emit('event', down);
      // The address step fails on the missing interface too (ENODEV): the promotion's error is the one reported.
      expect((await failed).message).toMatch(error);
      expect(calls.some((c) => c.startsWith('tracker.'))).toBe(true);
      for (const end = Date.now() + 3000; calls.filter((c) => c === 'shadow opened').length < 2 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
      expect(calls.filter((c) => c === 'shadow opened')).toHaveLength(2);
      await plan.close();
      if (upstreamPort !== 'closed') upstream.close();
    });
  }

  it('a shadow whose capture cannot be set up is dropped at once and said so; a takeover then closes the connections instead', async () => {
    const events = Object.assign(new EventEmitter<{ event: [DetectorEvent] }>(), { detector: { status: () => [] } });
    const calls: string[] = [];
    const tracker = new Proxy({}, { get: (_, k) => (calls.push(`tracker.${String(k)}`), () => []) }) as unknown as FlowTracker;
    const ready = Promise.reject(Object.assign(new Error('ENOMEM: Cannot allocate memory, setsockopt'), { code: 'ENOMEM' }));
    const plan = new PeerTakeover({
      heartbeat: events, peer: 'a', service: { address: '10.9.9.9', port: 6379 }, tracker, interface: 'nowhere0', prefixLength: 24,
      continue: {
        openShadow: () => (calls.push('shadow opened'), { ready, plans: async () => (calls.push('plans'), []), close: () => void calls.push('shadow closed'), stats }),
        upstream: { host: '127.0.0.1', port: 1 },
        plugin,
      },
    });
    const first = await new Promise<Error>((resolve) => plan.once('failed', resolve));
    expect(first.message).toMatch(/the shadow of a's connections could not be started \(a takeover will close them, not continue them\): ENOMEM/);
    expect(calls).toEqual(['shadow opened', 'shadow closed']);
    const second = new Promise<Error>((resolve) => plan.once('failed', resolve));
    events.emit('event', down);
    expect((await second).message).toMatch(/no shadow of its connections/);
    expect(calls).not.toContain('plans');
    expect(calls.some((c) => c.startsWith('tracker.'))).toBe(true);
    await plan.close();
  });
});
