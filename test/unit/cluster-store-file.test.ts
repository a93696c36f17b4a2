// The store contract on the embedded engine (one file, a lock, atomic rename), plus what only
// that engine does: a file that is not a store is refused, and a crash mid-write leaves a store.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { FileBackend } from '../../src/cluster/file-backend.js';
import { app, storeContract } from '../store-contract.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
storeContract('file', async () => new FileBackend(path.join(dir, `s${n++}`, 'store.json')));

describe('file store engine', () => {
  it('two backends on one file (two agents of one machine) see each other, and a race still has one winner', async () => {
    const file = path.join(dir, 'shared', 'store.json');
    const a = new ClusterStore(new FileBackend(file));
    const b = new ClusterStore(new FileBackend(file));
    const v = await a.create(app(), { by: 't', why: 't' });
    const r = await Promise.allSettled([a.update(v, { ...v.app, host: 'n2', state: 'loading' }, { by: 'n2', why: 'x' }), b.update(v, { ...v.app, host: 'n3', state: 'loading' }, { by: 'n3', why: 'x' })]);
    expect(r.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
    expect((await b.get('db'))!.app.host).toBe((await a.get('db'))!.app.host);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ format: 'takeover-store', version: 1 });
  });

  it('a second application with the same service address is refused (EAPPADDRESS), and nothing is written', async () => {
    const s = new ClusterStore(new FileBackend(path.join(dir, 'addr', 'store.json')));
    const address = { address: '198.51.100.9', prefixLength: 32, interface: 'eth0', port: 80 };
    await s.create({ ...app(), tag: 'one', address }, { by: 't', why: 't' });
    await expect(s.create({ ...app(), tag: 'two', address: { ...address, port: 81 } }, { by: 't', why: 't' })).rejects.toMatchObject({
      code: 'EAPPADDRESS', message: "application two: its service address 198.51.100.9 is one's: each application needs its own",
    });
    expect((await s.list()).map((x) => x.app.tag)).toEqual(['one']);
  });

  it('leases need no lock: a lock left by a writer killed mid-write does not hold up liveness', async () => {
    const file = path.join(dir, 'locked', 'store.json');
    const s = new ClusterStore(new FileBackend(file));
    await s.create(app(), { by: 't', why: 't' });
    mkdirSync(`${file}.lock`); // what proper-lockfile leaves when its holder is SIGKILLed mid-write
    const t0 = Date.now();
    const lease = await s.keepAlive('n2', 1000);
    expect(await s.liveNodes()).toEqual(new Set(['n2']));
    expect(Date.now() - t0).toBeLessThan(500);
    await lease.close();
    rmSync(`${file}.lock`, { recursive: true });
  });

  it('a file that is not a store is an error naming it, and is left as it was', async () => {
    const file = path.join(dir, 'notastore.json');
    writeFileSync(file, '{"hello": 1}\n');
    const s = new ClusterStore(new FileBackend(file));
    await expect(s.list()).rejects.toMatchObject({ code: 'ESTOREUNAVAILABLE', message: expect.stringContaining('is not a takeover store') });
    await expect(s.create(app(), { by: 't', why: 't' })).rejects.toMatchObject({ code: 'ESTOREUNAVAILABLE' });
    expect(readFileSync(file, 'utf8')).toBe('{"hello": 1}\n');
  });
});
