// Seed 002's SCSI heartbeat, judged without a disk: a changing TEST UNIT READY status is a live
// primary, a frozen one (reserved or released) past the timeout a dead one; the writer
// alternates and leaves the disk released when stopped; the watcher is a Witness.
import { describe, expect, it } from 'vitest';
import { DiskHeartbeatWatcher, DiskHeartbeatWriter, DiskPulseJudge, type DiskSample, type DiskVerdict } from '../../src/monitor/disk-heartbeat.js';

describe('DiskPulseJudge', () => {
  it('alive on the first change; dead once frozen past the timeout, in either state', () => {
    for (const stuck of ['reserved', 'free'] as const) {
      const j = new DiskPulseJudge(400);
      const out: DiskVerdict[] = [];
      let t = 0;
      let s: DiskSample = 'free';
      let changedAt = 0;
      for (let i = 0; i < 10; i++, t += 50) {
        if (i % 2 === 0) {
          s = s === 'free' ? 'reserved' : 'free';
          if (i > 0) changedAt = t;
        }
        out.push(...j.observe(s, t));
      }
      expect(out.map((v) => v.kind)).toEqual(['alive']);
      // The primary stops with the disk `stuck`.
      if (s !== stuck) out.push(...j.observe(stuck, (changedAt = t += 50)));
      for (; t < changedAt + 400; t += 50) out.push(...j.observe(stuck, t));
      expect(out.filter((v) => v.kind === 'dead')).toEqual([]);
      out.push(...j.observe(stuck, (t += 50)));
      expect(out.at(-1)).toEqual({ kind: 'dead', at: t, lastChangeAt: changedAt, stuck });
      expect(j.observe(stuck, t + 50)).toEqual([]); // once
      // It comes back: alive again.
      expect(j.observe(stuck === 'free' ? 'reserved' : 'free', t + 100)).toEqual([{ kind: 'alive', at: t + 100 }]);
    }
  });

  it('a disk that never changes from the start is dead after the timeout; ticks alone decide too', () => {
    const j = new DiskPulseJudge(300);
    expect(j.observe('free', 1000)).toEqual([]);
    expect(j.tick(1300)).toEqual([]);
    expect(j.tick(1301)).toEqual([{ kind: 'dead', at: 1301, lastChangeAt: 1000, stuck: 'free' }]);
    expect(() => new DiskPulseJudge(0)).toThrow(RangeError);
  });
});

describe('disk heartbeat writer and watcher over a simulated SPC-2 reservation', () => {
  it('a live writer is never judged dead; a stopped one is, within the timeout; the watcher is a Witness', async () => {
    let holder: string | undefined; // SPC-2 RESERVE(6): one holder at a time
    const writer = new DiskHeartbeatWriter({ reserve: async () => void (holder = 'primary'), release: async () => void (holder = undefined) }, { intervalMs: 30 });
    const watcher = new DiskHeartbeatWatcher(async () => (holder === 'primary' ? 'reserved' : 'free'), { intervalMs: 30, timeoutMs: 150 }, 'primary-node');
    const verdicts: DiskVerdict[] = [];
    watcher.on('verdict', (v) => verdicts.push(v));
    writer.start();
    watcher.start();
    try {
      await new Promise((r) => setTimeout(r, 600));
      expect(verdicts.map((v) => v.kind)).toEqual(['alive']);
      expect(watcher.judge.changes).toBeGreaterThan(8);
      expect(watcher.confirmsDown('primary-node')).toBe(false);
      expect(watcher.confirmsDown('another-node')).toBe(true);
      const stoppedAt = performance.timeOrigin + performance.now();
      await writer.stop();
      expect(holder).toBeUndefined(); // left released
      while (!verdicts.some((v) => v.kind === 'dead')) await new Promise((r) => setTimeout(r, 10));
      const dead = verdicts.find((v) => v.kind === 'dead')!;
      expect(dead.at - stoppedAt).toBeGreaterThan(100);
      expect(dead.at - stoppedAt).toBeLessThan(150 + 60 + 100); // timeout + a half-interval sample + slack
      expect(watcher.confirmsDown('primary-node')).toBe(true);
      expect(watcher.confirmsDown('another-node')).toBe(true); // not its node: no objection
    } finally {
      await writer.stop();
      watcher.stop();
    }
  });

  it('stop() waits for a RESERVE still in flight, then releases: the disk is never left reserved', async () => {
    let holder: string | undefined;
    let finishReserve: (() => void) | undefined;
    const writer = new DiskHeartbeatWriter({
      reserve: () => new Promise<void>((r) => (finishReserve = () => ((holder = 'primary'), r()))),
      release: async () => void (holder = undefined),
    }, { intervalMs: 10 });
    writer.start();
    await new Promise((r) => setTimeout(r, 5));
    const stopped = writer.stop();
    finishReserve!(); // the device answers the RESERVE after stop() was called
    await stopped;
    expect(holder).toBeUndefined();
  });

  it('command errors are counted and emitted, never thrown; an erroring disk is not proof of life', async () => {
    const writer = new DiskHeartbeatWriter({ reserve: async () => { throw new Error('EIO'); }, release: async () => {} }, { intervalMs: 10 });
    const errors: Error[] = [];
    writer.on('error', (e) => errors.push(e));
    writer.start();
    const watcher = new DiskHeartbeatWatcher(async () => { throw new Error('timeout'); }, { intervalMs: 10, timeoutMs: 30 });
    watcher.on('error', () => {});
    watcher.start();
    await new Promise((r) => setTimeout(r, 100));
    await writer.stop();
    watcher.stop();
    expect(writer.failures).toBeGreaterThan(3);
    expect(errors[0]!.message).toBe('EIO');
    expect(watcher.failures).toBeGreaterThan(3);
    expect(watcher.judge.state).toBe('unknown'); // no sample at all: neither alive nor dead
    expect(() => new DiskHeartbeatWatcher(async () => 'free', { intervalMs: 100, timeoutMs: 200 })).toThrow(RangeError);
  });
});
