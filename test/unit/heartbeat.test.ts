import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FailureDetector, type DetectorEvent } from '../../src/monitor/failure-detector.js';
import { decodeHeartbeat, encodeHeartbeat, type Heartbeat } from '../../src/monitor/heartbeat-packet.js';
import { prng } from './frame-builder.js';

const key = Buffer.from('cluster shared key, 32 bytes ...');
const hb = (over: Partial<Heartbeat> = {}): Heartbeat => ({ node: 'node-a', link: 0, incarnation: 7n, seq: 1n, sentAtMs: 1000.5, ...over });

describe('heartbeat packets', () => {
  it('round-trip and authenticate', () => {
    const b = encodeHeartbeat(hb({ seq: 2n ** 63n, node: 'nœud-β' }), key);
    expect(decodeHeartbeat(b, key)).toEqual({ ok: true, heartbeat: hb({ seq: 2n ** 63n, node: 'nœud-β' }) });
    expect(decodeHeartbeat(b, Buffer.from('another key'))).toEqual({ ok: false, reason: 'hmac' });
  });

  it('every single-bit change is rejected, every truncation too, random input never throws', () => {
    const b = encodeHeartbeat(hb(), key);
    for (let i = 0; i < b.length * 8; i++) {
      const c = Buffer.from(b);
      c[i >> 3] = c[i >> 3]! ^ (1 << (i & 7));
      expect(decodeHeartbeat(c, key).ok, `bit ${i}`).toBe(false);
    }
    for (let n = 0; n < b.length; n++) expect(decodeHeartbeat(b.subarray(0, n), key).ok).toBe(false);
    const rnd = prng(99);
    for (let i = 0; i < 5000; i++) {
      const r = randomBytes(Math.floor(rnd() * 120));
      if (rnd() < 0.5 && r.length > 7) Buffer.from('TKHB\x01').copy(r);
      expect(decodeHeartbeat(r, key).ok).toBe(false);
    }
  });

  it('carry a planned departure (leaving, serving); flags that mean nothing are refused', () => {
    for (const leaving of [{ serving: true }, { serving: false }]) {
      expect(decodeHeartbeat(encodeHeartbeat(hb({ leaving }), key), key)).toEqual({ ok: true, heartbeat: hb({ leaving }) });
    }
    const b = encodeHeartbeat(hb(), key);
    for (const flags of [2, 4, 0x80]) {
      const c = Buffer.from(b);
      c[6] = flags;
      expect(decodeHeartbeat(c, key)).toEqual({ ok: false, reason: 'flags' });
    }
    const v1 = Buffer.from(b);
    v1[4] = 1;
    expect(decodeHeartbeat(v1, key)).toEqual({ ok: false, reason: 'version' });
  });

  it('refuses to encode bad node ids and links', () => {
    expect(() => encodeHeartbeat(hb({ node: '' }), key)).toThrow(/node id/);
    expect(() => encodeHeartbeat(hb({ node: 'x'.repeat(65) }), key)).toThrow(/node id/);
    expect(() => encodeHeartbeat(hb({ link: 256 }), key)).toThrow(/link id/);
  });
});

/** Heartbeats every `interval` on the given links until `until`, into a detector ticked every 5 ms. */
function run(d: FailureDetector, plan: { from: number; until: Record<number, number>; interval: number; end: number; incarnation?: bigint }) {
  const events: DetectorEvent[] = [];
  const seq = new Map<number, bigint>();
  for (let t = plan.from; t <= plan.end; t += 5) {
    for (const [link, until] of Object.entries(plan.until)) {
      const l = Number(link);
      if (t <= until && (t - plan.from) % plan.interval === 0) {
        const s = (seq.get(l) ?? 0n) + 1n;
        seq.set(l, s);
        events.push(...d.observe(hb({ link: l, seq: s, incarnation: plan.incarnation ?? 7n }), l, t));
      }
    }
    events.push(...d.tick(t));
  }
  return events;
}

describe('FailureDetector', () => {
  it('a node that dies is declared down 300-400 ms later (100 ms interval, 3 misses), once, at every phase', () => {
    for (let phase = 0; phase < 100; phase += 5) {
      const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1] });
      const death = 1000 + phase; // dies between two heartbeats
      // Its two links fall silent a little apart, as they do on a real network.
      const events = run(d, { from: 0, until: { 0: death, 1: death - (phase % 20) }, interval: 100, end: 2500 });
      const down = events.filter((e) => e.kind === 'node-down');
      expect(down).toHaveLength(1);
      const after = down[0]!.at - death;
      expect(after, `phase ${phase}`).toBeGreaterThanOrEqual(300);
      expect(after, `phase ${phase}`).toBeLessThanOrEqual(405); // + one 5 ms tick
      expect(events.filter((e) => e.kind === 'link-down')).toHaveLength(0);
    }
  });

  it('one silent link is a link failure, not a node failure; it comes back as link-up', () => {
    const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1] });
    const events = run(d, { from: 0, until: { 0: 3000, 1: 1000 }, interval: 100, end: 3000 });
    expect(events.map((e) => e.kind)).toEqual(['node-up', 'link-down']);
    expect(events[1]).toMatchObject({ kind: 'link-down', link: 1 });
    expect(d.status()[0]).toMatchObject({ up: true, links: [{ link: 0, up: true }, { link: 1, up: false }] });
    expect(d.observe(hb({ link: 1, seq: 99n }), 1, 3005)).toEqual([{ kind: 'link-up', node: 'node-a', link: 1, at: 3005 }]);
  });

  it('replayed sequences and old incarnations are ignored and counted; a restart is down then up', () => {
    const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0] });
    expect(d.observe(hb({ seq: 5n }), 0, 0).map((e) => e.kind)).toEqual(['node-up']);
    expect(d.observe(hb({ seq: 5n }), 0, 10)).toEqual([]);
    expect(d.observe(hb({ seq: 4n }), 0, 20)).toEqual([]);
    expect(d.observe(hb({ seq: 1n, incarnation: 6n }), 0, 30)).toEqual([]);
    expect(d.counters).toEqual({ accepted: 1, replayed: 2, staleIncarnation: 1, afterLeave: 0 });
    // A replayed old heartbeat cannot hold a dead node up.
    expect(d.tick(450).map((e) => e.kind)).toEqual(['node-down']);
    const restart = d.observe(hb({ seq: 1n, incarnation: 8n }), 0, 500);
    expect(restart.map((e) => e.kind)).toEqual(['node-up']);
    expect(d.status()[0]).toMatchObject({ up: true, incarnation: 8n });
    // Restarted while still up (faster than the timeout): the old incarnation is down.
    expect(d.observe(hb({ seq: 1n, incarnation: 9n }), 0, 550).map((e) => e.kind)).toEqual(['node-down', 'node-up']);
  });

  it('a planned departure is node-left, not node-down; late heartbeats of that life are ignored; a new life is up', () => {
    const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1], peers: ['node-a', 'node-b'] });
    expect(d.status().map((p) => [p.node, p.heard, p.up])).toEqual([['node-a', false, false], ['node-b', false, false]]);
    d.observe(hb({ seq: 1n }), 0, 0);
    expect(d.observe(hb({ seq: 2n, leaving: { serving: true } }), 0, 50)).toEqual([{ kind: 'node-left', node: 'node-a', incarnation: 7n, at: 50, serving: true }]);
    // The same goodbye on the other link, and a heartbeat of that life that the link delayed.
    expect(d.observe(hb({ link: 1, seq: 2n, leaving: { serving: true } }), 1, 51)).toEqual([]);
    expect(d.observe(hb({ link: 1, seq: 3n }), 1, 60)).toEqual([]);
    expect(d.counters.afterLeave).toBe(2);
    expect(d.tick(5000)).toEqual([]); // silence after a goodbye is no failure
    expect(d.status()[0]).toMatchObject({ node: 'node-a', heard: true, up: false, left: { at: 50, serving: true }, downAt: 50 });
    expect(d.observe(hb({ seq: 1n, incarnation: 8n }), 0, 6000).map((e) => e.kind)).toEqual(['node-up']);
    expect(d.status()[0]).not.toHaveProperty('left');
  });

  it('rejects nonsense options', () => {
    expect(() => new FailureDetector({ intervalMs: 0, misses: 3, links: [0] })).toThrow(RangeError);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 0, links: [0] })).toThrow(RangeError);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 3, links: [] })).toThrow(RangeError);
  });
});
