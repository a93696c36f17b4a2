// Fencing with persistent reservations, against a model of a LUN seen by three nodes: keys,
// join, fence (preempt and abort, verified), partial failures, refusing to fence oneself,
// rejoin, and a node noticing its own key is gone.
import { describe, expect, it } from 'vitest';
import { clusterKeys, fenceKey, formatKey, parseKey } from '../../src/fence/fence-keys.js';
import { Fencer, OwnKeyWatch, PR_TYPE } from '../../src/fence/fencer.js';
import { ModelLun, ReservationConflict } from './pr-model.js';
import { decodeSense } from '../../src/scsi/sense.js';
import { CheckConditionError } from '../../src/scsi/transport.js';

/** A CHECK CONDITION from PR OUT as ScsiDevice reports it, with fixed-format sense. */
function checkCondition(key: number, asc: number, ascq: number): CheckConditionError {
  const sense = Buffer.alloc(18);
  sense[0] = 0x70;
  sense[2] = key;
  sense[7] = 10;
  sense[12] = asc;
  sense[13] = ascq;
  const decoded = decodeSense(sense);
  return new CheckConditionError(`CHECK CONDITION: ${decoded.valid ? decoded.description : '?'}`, 'disk', 0x5f, { status: 2, hostStatus: 0, driverStatus: 0, sense, data: Buffer.alloc(0), resid: 0 }, decoded);
}

const NODES = ['a', 'b', 'c'];

function cluster(luns: ModelLun[]) {
  const fencer = (node: string) => new Fencer({ cluster: 'prod', node, nodes: NODES, devices: luns.map((l, i) => l.nexus(node, `disk${i} via ${node}`)) });
  return { a: fencer('a'), b: fencer('b'), c: fencer('c'), io: (node: string, i = 0) => luns[i]!.nexus(node) };
}

describe('fence keys', () => {
  it('are stable, per cluster and node, nonzero, and distinct across a cluster', () => {
    expect(fenceKey('prod', 'a')).toBe(fenceKey('prod', 'a'));
    expect(fenceKey('prod', 'a')).not.toBe(fenceKey('prod', 'b'));
    expect(fenceKey('prod', 'a') >> 32n).toBe(fenceKey('prod', 'b') >> 32n); // same cluster half
    expect(fenceKey('test', 'a') >> 32n).not.toBe(fenceKey('prod', 'a') >> 32n);
    const keys = clusterKeys('prod', Array.from({ length: 500 }, (_, i) => `node${i}`));
    expect(new Set(keys.values()).size).toBe(500);
    for (const k of keys.values()) expect(k > 0n && k < 1n << 64n).toBe(true);
    expect(() => fenceKey('', 'a')).toThrow(RangeError);
  });

  it('format and parse; bad keys are refused with the reason', () => {
    const k = fenceKey('prod', 'a');
    expect(parseKey(formatKey(k))).toBe(k);
    expect(parseKey('12345')).toBe(12345n);
    for (const bad of ['0', '0x0', '0x1ffffffffffffffff', '-1', 'abc', '0x', '', '1e5', ' 1']) expect(() => parseKey(bad), bad).toThrow(RangeError);
    expect(parseKey('18446744073709551615')).toBe((1n << 64n) - 1n);
    expect(() => parseKey('18446744073709551616')).toThrow(RangeError);
  });
});

describe('Fencer', () => {
  it('join registers everyone and reserves Write Exclusive – Registrants Only once', async () => {
    const luns = [new ModelLun(), new ModelLun()];
    const { a, b, c } = cluster(luns);
    for (const f of [a, b, c]) expect((await f.join()).every((r) => r.ok && r.outcome === 'registered')).toBe(true);
    for (const lun of luns) {
      expect([...lun.registrations.values()].sort()).toEqual([a.myKey, b.myKey, c.myKey].sort());
      expect(lun.reservation).toMatchObject({ nexus: 'a', type: PR_TYPE.writeExclusiveRegistrantsOnly });
    }
  });

  it('join by every node at once (a cluster starting): all registered, one WERO reservation, nobody fails', async () => {
    const luns = [new ModelLun(), new ModelLun()];
    const { a, b, c, io } = cluster(luns);
    // Each reads "no reservation" before any of them reserves: the later RESERVEs conflict.
    const reports = await Promise.all([a, b, c].map((f) => f.join()));
    for (const r of reports.flat()) expect(r).toMatchObject({ ok: true, outcome: 'registered' });
    for (const lun of luns) {
      expect([...lun.registrations.values()].sort()).toEqual([a.myKey, b.myKey, c.myKey].sort());
      expect(lun.reservation?.type).toBe(PR_TYPE.writeExclusiveRegistrantsOnly);
    }
    // Registrants write under a WERO reservation whoever holds it.
    for (const node of NODES) expect(() => io(node).write()).not.toThrow();
  });

  it('fence: the victim loses its key on every device, its writes conflict, its reads still work; verified', async () => {
    const luns = [new ModelLun(), new ModelLun()];
    const { a, b, c, io } = cluster(luns);
    for (const f of [a, b, c]) await f.join();
    const report = await c.fence('b');
    expect(report).toMatchObject({ node: 'b', key: formatKey(b.myKey), ok: true });
    expect(report.devices.map((d) => [d.device, d.outcome])).toEqual([['disk0 via c', 'fenced'], ['disk1 via c', 'fenced']]);
    for (let i = 0; i < 2; i++) {
      expect(() => io('b', i).write()).toThrow(ReservationConflict);
      expect(() => io('b', i).read()).not.toThrow();
      expect(() => io('a', i).write()).not.toThrow();
      expect(() => io('c', i).write()).not.toThrow();
    }
    // Again: nothing left to do, still verified.
    expect((await c.fence('b')).devices.map((d) => d.outcome)).toEqual(['already-fenced', 'already-fenced']);
  });

  it('with abort: false it sends PREEMPT instead of PREEMPT AND ABORT', async () => {
    const lun = new ModelLun();
    const sent: string[] = [];
    const dev = (id: string) => {
      const d = lun.nexus(id);
      return { ...d, name: d.name, preempt: (...a: [bigint, bigint, number]) => (sent.push('preempt'), d.preempt(...a)), preemptAndAbort: (...a: [bigint, bigint, number]) => (sent.push('preemptAndAbort'), d.preemptAndAbort(...a)) };
    };
    const a = new Fencer({ cluster: 'prod', node: 'a', nodes: NODES, devices: [dev('a')], abort: false });
    const b = new Fencer({ cluster: 'prod', node: 'b', nodes: NODES, devices: [dev('b')] });
    await a.join();
    await b.join();
    expect((await a.fence('b')).ok).toBe(true);
    await b.join();
    expect((await b.fence('a')).ok).toBe(true);
    expect(sent).toEqual(['preempt', 'preemptAndAbort']);
  });

  it('a target that rejects PREEMPT AND ABORT (ILLEGAL REQUEST 24/00, as tgtd does) is fenced with PREEMPT, and the report says so', async () => {
    const luns = [new ModelLun(), new ModelLun()];
    const { a, b } = cluster(luns);
    await a.join();
    await b.join();
    luns[1]!.failNext = { nexus: 'a', op: 'preemptAndAbort', error: checkCondition(0x05, 0x24, 0x00) };
    const r = await a.fence('b');
    expect(r.ok).toBe(true);
    expect(r.devices.map((d) => [d.outcome, d.method])).toEqual([['fenced', 'preempt-and-abort'], ['fenced', 'preempt']]);
    expect(r.devices[0]!.note).toBeUndefined();
    expect(r.devices[1]!.note).toMatch(/disk1 via a rejected PREEMPT AND ABORT \(ILLEGAL REQUEST: invalid field in cdb \(24\/00\)\): PREEMPT used/);
    expect(luns.map((l) => l.registrations.has('b'))).toEqual([false, false]);
  });

  it('any other PREEMPT AND ABORT failure is not papered over with PREEMPT', async () => {
    const lun = new ModelLun();
    const { a, b } = cluster([lun]);
    await a.join();
    await b.join();
    lun.failNext = { nexus: 'a', op: 'preemptAndAbort', error: checkCondition(0x05, 0x26, 0x00) }; // invalid field in parameter list
    const r = await a.fence('b');
    expect(r.devices[0]).toMatchObject({ ok: false, outcome: 'failed', error: expect.stringMatching(/26\/00/) });
    expect(lun.registrations.has('b')).toBe(true);
  });

  it('fencing the reservation holder moves the reservation to the fencer', async () => {
    const lun = new ModelLun();
    const { a, b } = cluster([lun]);
    await a.join();
    await b.join();
    expect(lun.reservation?.nexus).toBe('a');
    expect((await b.fence('a')).ok).toBe(true);
    expect(lun.reservation).toMatchObject({ nexus: 'b', key: b.myKey, type: PR_TYPE.writeExclusiveRegistrantsOnly });
  });

  it('refuses to fence itself or an unknown node, and says when it cannot preempt', async () => {
    const lun = new ModelLun();
    const { a, b } = cluster([lun]);
    await expect(a.fence('a')).rejects.toMatchObject({ code: 'ERR_FENCE_SELF' });
    await expect(a.fence('z')).rejects.toMatchObject({ code: 'ERR_FENCE_UNKNOWN_NODE' });
    await b.join(); // a never joined
    const r = await a.fence('b');
    expect(r.ok).toBe(false);
    expect(r.devices[0]!.error).toMatch(/is not registered on disk0 via a: it cannot preempt/);
    expect(lun.registrations.has('b')).toBe(true);
  });

  it('a partial failure is reported per device, never as success', async () => {
    const luns = [new ModelLun(), new ModelLun()];
    const { a, b } = cluster(luns);
    await a.join();
    await b.join();
    luns[1]!.failNext = { nexus: 'a', op: 'preemptAndAbort', error: new Error('CHECK CONDITION: NOT READY') };
    const r = await a.fence('b');
    expect(r.ok).toBe(false);
    expect(r.devices.map((d) => [d.outcome, d.error])).toEqual([['fenced', undefined], ['failed', 'CHECK CONDITION: NOT READY']]);
    // A retry finishes the job and sees the first device already done.
    expect((await a.fence('b')).devices.map((d) => d.outcome)).toEqual(['already-fenced', 'fenced']);
  });

  it('a preempt the device did not carry out fails the verification', async () => {
    const lun = new ModelLun();
    const { a, b } = cluster([lun]);
    await a.join();
    await b.join();
    const dev = lun.nexus('a');
    const lying = new Fencer({ cluster: 'prod', node: 'a', nodes: NODES, devices: [{ ...dev, name: dev.name, preemptAndAbort: async () => {} }] });
    const r = await lying.fence('b');
    expect(r.devices[0]).toMatchObject({ ok: false, outcome: 'failed', error: expect.stringMatching(/still registered .* after the preempt/) });
  });

  it('the fenced node notices its key is gone; it rejoins (unfence) and may write again', async () => {
    const lun = new ModelLun();
    const { a, b, io } = cluster([lun]);
    await a.join();
    await b.join();
    const watch = new OwnKeyWatch(b, 10);
    const fenced: string[] = [];
    watch.on('fenced', (e) => fenced.push(e.device));
    watch.start();
    try {
      await new Promise((r) => setTimeout(r, 30));
      expect(fenced).toEqual([]);
      await a.fence('b');
      await new Promise((r) => setTimeout(r, 40));
      expect(fenced).toEqual(['disk0 via b']); // once
      expect((await b.join())[0]!.ok).toBe(true);
      expect(() => io('b').write()).not.toThrow();
      expect(await b.ownKeyPresent()).toEqual([{ device: 'disk0 via b', registered: true }]);
    } finally {
      watch.stop();
    }
    expect((await b.leave())[0]!.outcome).toBe('unregistered');
    expect(lun.registrations.has('b')).toBe(false);
  });
});
