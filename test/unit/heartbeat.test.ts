import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SKEW_MS, FailureDetector, type DetectorEvent } from '../../src/monitor/failure-detector.js';
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

/**
 * Drives a detector as HeartbeatAgent does: a tick after every heartbeat heard, and one when the
 * decision timer fires, armed for the next deadline with the 1 ms resolution of timers (a
 * heartbeat arriving at the same time is heard first). Arrivals in time order.
 */
function drive(d: FailureDetector, arrivals: Array<{ at: number; link: number }>, end: number): DetectorEvent[] {
  const events: DetectorEvent[] = [];
  const seq = new Map<number, bigint>();
  let i = 0;
  let timerAt = Infinity;
  for (;;) {
    const arrival = arrivals[i];
    const now = Math.min(arrival?.at ?? Infinity, timerAt);
    if (now > end) return events;
    if (arrival && arrival.at <= timerAt) {
      i++;
      const s = (seq.get(arrival.link) ?? 0n) + 1n;
      seq.set(arrival.link, s);
      events.push(...d.observe(hb({ link: arrival.link, seq: s }), arrival.link, now));
    }
    events.push(...d.tick(now));
    const at = d.nextDeadline(now);
    timerAt = at === undefined ? Infinity : now + Math.max(1, Math.ceil(at - now));
  }
}

/** Heartbeat k due at k × interval, arriving `late(k)` after it (undefined: lost), k = 0..count-1. */
function schedule(interval: number, count: number, late: (k: number) => number | undefined, link = 0) {
  const out: Array<{ at: number; link: number }> = [];
  for (let k = 0; k < count; k++) {
    const l = late(k);
    if (l !== undefined) out.push({ at: k * interval + l, link });
  }
  return out.sort((a, b) => a.at - b.at);
}

describe('FailureDetector', () => {
  it('a node that dies is declared down misses × interval + skew after the last heartbeat heard (325 ms at 100 ms × 3), at every phase', () => {
    for (let phase = 0; phase < 100; phase += 5) {
      const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1] });
      expect(d.timeoutMs).toBe(325);
      const death = 1000 + phase; // dies between two heartbeats
      // Its two links fall silent a little apart, as they do on a real network.
      const arrivals = [...schedule(100, 11, () => 0, 0), ...schedule(100, 11, (k) => (k * 100 <= death - (phase % 20) ? 0 : undefined), 1)].sort((a, b) => a.at - b.at);
      const events = drive(d, arrivals, 3000);
      const down = events.filter((e) => e.kind === 'node-down');
      expect(down).toHaveLength(1);
      const lastHeard = Math.floor(death / 100) * 100;
      expect(down[0]).toMatchObject({ lastHeardAt: lastHeard });
      expect(down[0]!.at - lastHeard, `phase ${phase}`).toBeGreaterThan(325);
      expect(down[0]!.at - lastHeard, `phase ${phase}`).toBeLessThanOrEqual(326); // one timer, 1 ms resolution
      expect(down[0]!.at - death).toBeLessThanOrEqual(326);
      expect(events.filter((e) => e.kind === 'link-down')).toHaveLength(0);
    }
  });

  it('no false positive under jitter: heartbeats late by up to the skew, with up to misses - 1 lost in a row, on one link or two', () => {
    const rnd = prng(7);
    for (const misses of [1, 2, 3]) {
      for (const links of [[0], [0, 1]]) {
        const d = new FailureDetector({ intervalMs: 100, misses, links });
        expect(d.skewMs).toBe(DEFAULT_SKEW_MS);
        const arrivals = links.flatMap((link) => {
          let lostInARow = 0;
          return schedule(100, 5000, (k) => {
            // Never heartbeat 0 (the peer must come up), never `misses` in a row.
            if (k > 0 && lostInARow < misses - 1 && rnd() < 0.3) {
              lostInARow++;
              return undefined;
            }
            lostInARow = 0;
            return rnd() * DEFAULT_SKEW_MS;
          }, link);
        }).sort((a, b) => a.at - b.at);
        const events = drive(d, arrivals, 5000 * 100 - 1);
        expect(events.map((e) => e.kind), `misses ${misses}, links ${links.length}`).toEqual(['node-up']);
      }
    }
  });

  it('the boundary: after misses - 1 lost heartbeats the next one late by the skew holds the node up; late by just past it, it is down first', () => {
    for (const misses of [1, 3]) {
      const heardBy = (lateness: number) => {
        const d = new FailureDetector({ intervalMs: 100, misses, links: [0] });
        // Heartbeat 0 on time, 1 .. misses-1 lost, then `misses` late by `lateness`, then on time.
        const events = drive(d, schedule(100, misses + 3, (k) => (k === 0 || k > misses ? 0 : k === misses ? lateness : undefined)), (misses + 3) * 100);
        return events.map((e) => e.kind);
      };
      expect(heardBy(DEFAULT_SKEW_MS), `misses ${misses}`).toEqual(['node-up']);
      expect(heardBy(DEFAULT_SKEW_MS + 2), `misses ${misses}`).toEqual(['node-up', 'node-down', 'node-up']);
      // The pure rule, without the timer's resolution: exactly the timeout is not yet silence past it.
      const d = new FailureDetector({ intervalMs: 100, misses, links: [0] });
      d.observe(hb(), 0, 0);
      expect(d.tick(d.timeoutMs)).toEqual([]);
      expect(d.tick(d.timeoutMs + 0.001).map((e) => e.kind)).toEqual(['node-down']);
    }
  });

  it('nextDeadline: the first timeout of a link still up, none once it passed undecided or when no peer is up', () => {
    const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1] });
    expect(d.nextDeadline(0)).toBeUndefined();
    d.observe(hb({ link: 0, seq: 1n }), 0, 1000); // link 1 not heard yet: it counts from here too
    d.observe(hb({ link: 1, seq: 1n }), 1, 1040);
    expect(d.nextDeadline(1100)).toBe(1325);
    expect(d.tick(1326)).toEqual([]); // link 0 silent, but link 1 not heard within two intervals
    expect(d.nextDeadline(1326)).toBe(1365);
    expect(d.tick(1366).map((e) => e.kind)).toEqual(['node-down']);
    expect(d.nextDeadline(1366)).toBeUndefined();
  });

  it('after a local pause nothing is declared down for an interval and the skew: a peer heard meanwhile stays up, one still silent is down then', () => {
    const d = new FailureDetector({ intervalMs: 100, misses: 3, links: [0, 1] });
    d.observe(hb({ link: 0, seq: 1n }), 0, 1000);
    d.observe(hb({ link: 1, seq: 1n }), 1, 1000);
    // This node was held from ~1000 to 1600 (its own heartbeat due at 1100 went out at 1600).
    d.localPause(1600);
    expect(d.convictionsWaitUntil(1600)).toBe(1725);
    expect(d.nextDeadline(1600)).toBe(1725); // the deadlines (1325) moved to the wait's end
    expect(d.tick(1600)).toEqual([]);
    expect(d.tick(1724)).toEqual([]);
    // Heard within the wait: up, and judged from that heartbeat on.
    d.observe(hb({ link: 0, seq: 2n }), 0, 1650);
    d.observe(hb({ link: 1, seq: 2n }), 1, 1650);
    expect(d.tick(1725)).toEqual([]);
    expect(d.nextDeadline(1725)).toBe(1975);
    expect(d.convictionsWaitUntil(1725)).toBeUndefined();
    // Another pause; this time the peer is not heard: down at the wait's end, not before.
    d.localPause(2500);
    expect(d.tick(2624)).toEqual([]);
    expect(d.tick(2625)).toMatchObject([{ kind: 'node-down', node: 'node-a', lastHeardAt: 1650 }]);
    // A later pause never shortens a wait already running.
    d.localPause(3000);
    d.localPause(2950);
    expect(d.convictionsWaitUntil(3000)).toBe(3125);
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

  it('the skew defaults to 25 ms, at most one interval; a skew past the interval or negative is refused', () => {
    expect(new FailureDetector({ intervalMs: 1000, misses: 3, links: [0] }).timeoutMs).toBe(3025);
    expect(new FailureDetector({ intervalMs: 10, misses: 3, links: [0] }).timeoutMs).toBe(40);
    expect(new FailureDetector({ intervalMs: 100, misses: 2, links: [0], skewMs: 0 }).timeoutMs).toBe(200);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 3, links: [0], skewMs: 101 })).toThrow(/skewMs/);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 3, links: [0], skewMs: -1 })).toThrow(/skewMs/);
  });

  it('rejects nonsense options', () => {
    expect(() => new FailureDetector({ intervalMs: 0, misses: 3, links: [0] })).toThrow(RangeError);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 0, links: [0] })).toThrow(RangeError);
    expect(() => new FailureDetector({ intervalMs: 100, misses: 3, links: [] })).toThrow(RangeError);
  });
});
