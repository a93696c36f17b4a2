// The library side of a cluster-aware application over the embedded store: registration on load
// (seed 002 FIG. 6, each branch), waiting to be HOST, ready, and the resume marker, which only
// the HOST may write and the next HOST reads.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterApp } from '../../src/cluster/cluster-app.js';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { FileBackend } from '../../src/cluster/file-backend.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-capp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => new ClusterStore(new FileBackend(path.join(dir, `s${n++}.json`)), ['a', 'b']);
const spec = { tag: 'orders', type: 'cluster-aware' as const, primary: 'a', backups: ['b'] };

describe('ClusterApp (a cluster-aware application)', () => {
  it('registration on load: create, resume, standby, unloaded -> HOST, phoenixing primary', async () => {
    const store = fresh();
    const onA = new ClusterApp(store, 'orders', 'a');
    const onB = new ClusterApp(store, 'orders', 'b');
    await expect(onB.register(spec)).rejects.toMatchObject({ code: 'EAPPUNKNOWN' }); // only its PRIMARY creates it
    expect(await onA.register(spec)).toEqual({ kind: 'create' });
    expect(await onA.get()).toMatchObject({ host: 'a', state: 'loading' });
    expect(await onA.register(spec)).toEqual({ kind: 'resume' });
    expect(await onB.register()).toEqual({ kind: 'standby', host: 'a' });
    const s = (await store.get('orders'))!;
    await store.update(s, { ...s.app, host: null, state: 'unloaded' }, { by: 'op', why: 'unload' });
    expect(await onB.register()).toEqual({ kind: 'become-host' });
    expect(await onB.get()).toMatchObject({ host: 'b', state: 'loading' });
    expect(await onA.register()).toEqual({ kind: 'phoenix', host: 'b' });
    await store.close();
  });

  it('waitUntilHost resolves when the store makes this node HOST; ready and the marker are the HOST\'s alone; the next HOST reads the marker', async () => {
    const store = fresh();
    const onA = new ClusterApp(store, 'orders', 'a');
    const onB = new ClusterApp(store, 'orders', 'b');
    await onA.register(spec);
    await onA.ready();
    await onA.setMarker('order 1041 matched');
    await expect(onB.setMarker('x')).rejects.toMatchObject({ code: 'ENOTHOST', host: 'a' });
    await expect(onB.ready()).rejects.toMatchObject({ code: 'ENOTHOST' });
    await expect(onB.waitUntilHost({ timeoutMs: 100 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const waiting = onB.waitUntilHost({ timeoutMs: 5000 });
    const s = (await store.get('orders'))!;
    await store.update(s, { ...s.app, host: 'b', state: 'loading', failedOver: true }, { by: 'b', why: 'a failed' }); // what b's agent writes
    expect(await waiting).toMatchObject({ host: 'b' });
    expect(await onB.getMarker()).toBe('order 1041 matched');
    await onB.ready();
    expect(await onB.get()).toMatchObject({ host: 'b', state: 'up' });
    const ac = new AbortController();
    const aborted = onA.waitUntilHost({ signal: ac.signal });
    ac.abort();
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
    await store.close();
  });
});
