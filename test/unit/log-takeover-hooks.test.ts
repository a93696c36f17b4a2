// Real `beforeTakeover` hooks (src/log/takeover-hooks.ts): fencing the old primary's node with
// the Fencer against the model of a LUN the fencer's tests use (resolves only when every device
// is fenced, rejects with the report otherwise), the role claimed in the file store, the two
// chained (a failed fence stops the claim), and takeOverFenced() with a real MirrorBackup: taken
// over once the old primary is fenced and its role free, refused (nothing changed) while the old
// primary's role lease is live.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FenceFailedError } from '../../src/agent/node-fencing.js';
import { FileBackend } from '../../src/cluster/file-backend.js';
import { Fencer, type FenceReport } from '../../src/fence/fencer.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { LogPrimaryRole } from '../../src/log/primary-role.js';
import { takeOverFenced } from '../../src/log/takeover.js';
import { chainHooks, fenceHook, roleClaimHook } from '../../src/log/takeover-hooks.js';
import { KEY, perTestScratch, record, until } from './mirror-helpers.js';
import { ModelLun, ReservationConflict } from './pr-model.js';

const scratch = perTestScratch('log-takeover-hooks-');
const NODES = ['a', 'b', 'c'];

/** Two LUNs seen by three nodes, every node joined (registered, the LUNs reserved). */
async function fencedCluster() {
  const luns = [new ModelLun(), new ModelLun()];
  const fencer = (node: string) => new Fencer({ cluster: 'prod', node, nodes: NODES, devices: luns.map((l, i) => l.nexus(node, `disk${i} via ${node}`)) });
  const f = { a: fencer('a'), b: fencer('b'), c: fencer('c') };
  for (const x of Object.values(f)) await x.join();
  return { luns, ...f };
}

const role = (node: string, incarnation: bigint, log = 'orders') => {
  const backend = new FileBackend(path.join(scratch.root, 'store.json.logs'));
  scratch.open.push(backend);
  return new LogPrimaryRole({ backend, log, node, incarnation, leaseMs: 600 });
};

describe('fenceHook', () => {
  it('resolves once the victim is fenced off every device: its writes conflict, the others\' do not', async () => {
    const { luns, b } = await fencedCluster();
    const reports: FenceReport[] = [];
    await fenceHook(b, 'a', (r) => reports.push(r))();
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ node: 'a', ok: true });
    expect(reports[0]!.devices.map((d) => d.outcome)).toEqual(['fenced', 'fenced']);
    for (const lun of luns) {
      expect(() => lun.nexus('a').write()).toThrow(ReservationConflict);
      expect(() => lun.nexus('b').write()).not.toThrow();
    }
    // Again (a second survivor, or a retried takeover): already fenced, still ok.
    await fenceHook(b, () => Promise.resolve('a'), (r) => reports.push(r))();
    expect(reports[1]!.devices.map((d) => d.outcome)).toEqual(['already-fenced', 'already-fenced']);
  });

  it('rejects with FenceFailedError carrying the report when one device fails; the victim still writes there', async () => {
    const { luns, b } = await fencedCluster();
    luns[1]!.failNext = { nexus: 'b', op: 'preemptAndAbort', error: new Error('transport failure') };
    const err = (await fenceHook(b, 'a')().then(() => undefined, (e: unknown) => e)) as FenceFailedError;
    expect(err).toBeInstanceOf(FenceFailedError);
    expect(err.code).toBe('ERR_FENCE_FAILED');
    expect(err.report.ok).toBe(false);
    expect(err.report.devices.map((d) => [d.device, d.outcome])).toEqual([['disk0 via b', 'fenced'], ['disk1 via b', 'failed']]);
    expect(err.message).toMatch(/disk1 via b: transport failure/);
    expect(() => luns[1]!.nexus('a').write()).not.toThrow();
  });

  it('refuses to fence this node itself (ERR_FENCE_SELF) or an unknown one (ERR_FENCE_UNKNOWN_NODE)', async () => {
    const { b } = await fencedCluster();
    await expect(fenceHook(b, 'b')()).rejects.toMatchObject({ code: 'ERR_FENCE_SELF' });
    await expect(fenceHook(b, 'z')()).rejects.toMatchObject({ code: 'ERR_FENCE_UNKNOWN_NODE' });
  });
});

describe('chainHooks', () => {
  it('fence, then claim: the claim runs only after the fence resolved; a failed fence leaves the role untouched', async () => {
    const { luns, b } = await fencedCluster();
    const a = role('a', 1n);
    await (await a.claim()).release(); // a's process ended; its record stays
    const before = await a.read();

    luns[0]!.failNext = { nexus: 'b', op: 'readKeys', error: new Error('no path to the device') };
    const rb = role('b', 2n);
    await expect(chainHooks(fenceHook(b, 'a'), roleClaimHook(rb))()).rejects.toBeInstanceOf(FenceFailedError);
    expect(await rb.read()).toEqual(before);
    expect(rb.hold).toBeUndefined();

    const order: string[] = [];
    await chainHooks(
      async () => {
        await fenceHook(b, 'a')();
        order.push('fenced');
      },
      async () => {
        await roleClaimHook(rb)();
        order.push('claimed');
      },
    )();
    expect(order).toEqual(['fenced', 'claimed']);
    expect(rb.hold!.record.primary).toBe('b');
    await rb.hold!.release();
    expect(() => chainHooks()).toThrow(RangeError);
  });
});

describe('takeOverFenced with the real hooks', () => {
  it('a backup takes over once the old primary is fenced and its role claimed; while the old role lease is live it is refused and nothing changes', async () => {
    const { luns, b: fencerB } = await fencedCluster();
    const backup = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'b', log: 'orders' });
    scratch.open.push(backup);
    const ra = role('a', 1n);
    const holdA = await ra.claim();
    const primary = await MirroredLog.open({ dir: path.join(scratch.root, 'a'), backup: { host: '127.0.0.1', port: backup.port }, key: KEY, node: 'a', log: 'orders', ackTimeoutMs: 300, reconnect: { minMs: 10, maxMs: 40 } });
    scratch.open.push(primary);
    await until(() => primary.state === 'normal', 5000, 'normal');
    for (let i = 0; i < 20; i++) await primary.append(record(i));
    await primary.close();
    await until(() => !backup.attached, 3000, 'the primary detached');

    const rb = role('b', 2n);
    const hook = chainHooks(fenceHook(fencerB, 'a'), roleClaimHook(rb, { timeoutMs: 300, pollMs: 50 }));
    const replayed: number[] = [];
    const opts = { key: KEY, node: 'b', log: 'orders', replay: (lsn: number) => replayed.push(lsn), quietMs: 0, beforeTakeover: hook };
    // a's role lease is live (its process is only cut off, as far as the backup can tell): refused.
    await expect(takeOverFenced(backup, opts)).rejects.toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: 'a' } });
    expect(backup.promoted).toBe(false);
    expect(replayed).toEqual([]);
    // a was fenced by that attempt already (the first link of the chain), which stays true.
    expect(() => luns[0]!.nexus('a').write()).toThrow(ReservationConflict);

    // a loses its lease (here: its process stops renewing it, released); a must stop acknowledging.
    await holdA.release();
    expect(await holdA.lost).toBe('released');
    const t = await takeOverFenced(backup, opts);
    scratch.open.push(t.log);
    expect(t.records).toBe(20);
    expect(replayed).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(rb.hold).toMatchObject({ record: { primary: 'b', incarnation: 2n }, takenFrom: { primary: 'a' } });
    // The old primary returning is told it is a backup of b.
    expect(await role('a', 3n).atStart()).toMatchObject({ role: 'backup', primary: { primary: 'b' } });
    await rb.hold!.release();
  }, 20_000);
});
