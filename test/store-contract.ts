// What every store engine must do, one suite for both (issue 11: "one interface, two engines, one
// test suite run against both"). A test file calls `storeContract` with a factory of fresh,
// empty backends; the factory's backends are closed after each test.
import { afterEach, describe, expect, it } from 'vitest';
import type { AppObjectInput } from '../src/cluster/app-object.js';
import { ClusterStore } from '../src/cluster/cluster-store.js';
import type { StoreBackend } from '../src/cluster/store-backend.js';

const NODES = ['n1', 'n2', 'n3'];
const by = { by: 'test', why: 'contract' };

export function app(over: Partial<AppObjectInput> = {}): AppObjectInput {
  return { tag: 'db', type: 'cluster-capable', command: { load: ['/bin/true'] }, host: 'n1', primary: 'n1', backups: ['n2', 'n3'], state: 'up', since: 1, ...over };
}

const waitFor = async (cond: () => boolean, ms: number) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

export function storeContract(engine: string, fresh: () => Promise<StoreBackend>): void {
  describe(`cluster store contract: ${engine}`, () => {
    const open: StoreBackend[] = [];
    const store = async () => {
      const b = await fresh();
      open.push(b);
      return new ClusterStore(b, NODES);
    };
    afterEach(async () => {
      for (const b of open.splice(0)) await b.close();
    });

    it('registers a valid object once; a second registration is EAPPEXISTS; bad objects name the field and write nothing', async () => {
      const s = await store();
      const created = await s.create(app(), by);
      expect(created.revision).toBeGreaterThan(0);
      expect(created.app).toMatchObject({ tag: 'db', host: 'n1', autoRecover: true, marker: null, restart: { maxFailures: 2 } });
      await expect(s.create(app(), by)).rejects.toMatchObject({ code: 'EAPPEXISTS' });
      const bad: Array<[Partial<AppObjectInput>, string]> = [
        [{ tag: 'x', backups: ['n9'] }, 'backups[0]'],
        [{ tag: 'x', primary: 'nX', host: null, state: 'unloaded' }, 'primary'],
        [{ tag: 'x', backups: ['n1'] }, 'backups[0]'],
        [{ tag: 'x', host: 'n2', backups: [] }, 'host'],
        [{ tag: 'x', type: 'cluster-capable', command: undefined }, 'command'],
        [{ tag: 'x', host: null, state: 'up' }, 'state'],
        [{ tag: 'x', address: { address: '10.0.0.1', prefixLength: 33, interface: 'eth0' } }, 'address.prefixLength'],
        [{ tag: 'x', command: { load: [] } }, 'command.load'],
        [{ tag: 'x', state: 'released' }, 'releasedTo'],
        [{ tag: 'x', autoRecover: 'yes' as unknown as boolean }, 'autoRecover'],
      ];
      for (const [over, field] of bad) await expect(s.create(app(over), by), field).rejects.toMatchObject({ code: 'EAPPINVALID', field });
      expect((await s.list()).map((x) => x.app.tag)).toEqual(['db']);
    });

    it('an update names the revision it read: a stale one is ESTORECONFLICT and changes nothing', async () => {
      const s = await store();
      const v1 = await s.create(app(), by);
      const v2 = await s.update(v1, { ...v1.app, marker: 'lsn 0/16B3748' }, by);
      expect(v2.revision).toBeGreaterThan(v1.revision);
      await expect(s.update(v1, { ...v1.app, host: 'n2' }, by)).rejects.toMatchObject({ code: 'ESTORECONFLICT' });
      expect((await s.get('db'))!.app).toMatchObject({ host: 'n1', marker: 'lsn 0/16B3748' });
      await expect(s.update(v2, { ...v2.app, tag: 'other' }, by)).rejects.toMatchObject({ code: 'EAPPINVALID', field: 'tag' });
    });

    it('survivors racing to become HOST from the same revision: exactly one wins, the others get ESTORECONFLICT', async () => {
      const s = await store();
      const seen = await s.create(app(), by);
      for (let round = 0; round < 5; round++) {
        const current = (await s.get('db'))!;
        const racers = ['n2', 'n3', 'n2', 'n3', 'n2', 'n3'].map((n, i) => s.update(current, { ...current.app, host: round % 2 ? 'n1' : n, state: 'loading', marker: `racer ${i}` }, { by: n, why: 'failover' }));
        const results = await Promise.allSettled(racers);
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ESTORECONFLICT' });
      }
      expect((await s.get('db'))!.revision).toBeGreaterThan(seen.revision);
    });

    it('keeps a history of HOST and state changes (who, when, why), not of other edits, bounded', async () => {
      let t = 1000;
      const b = await fresh();
      open.push(b);
      const s = new ClusterStore(b, NODES, () => t);
      let cur = await s.create(app(), { by: 'operator@h', why: 'registered' });
      t = 2000;
      cur = await s.update(cur, { ...cur.app, host: 'n2', state: 'loading' }, { by: 'n2', why: 'n1 failed' });
      cur = await s.update(cur, { ...cur.app, marker: 'm' }, { by: 'n2', why: 'marker' });
      t = 3000;
      cur = await s.update(cur, { ...cur.app, state: 'up' }, { by: 'n2', why: 'loaded' });
      expect(cur.app.since).toBe(3000);
      expect((await s.get('db'))!.history).toEqual([
        { at: 1000, from: null, to: { host: 'n1', state: 'up' }, by: 'operator@h', why: 'registered' },
        { at: 2000, from: { host: 'n1', state: 'up' }, to: { host: 'n2', state: 'loading' }, by: 'n2', why: 'n1 failed' },
        { at: 3000, from: { host: 'n2', state: 'loading' }, to: { host: 'n2', state: 'up' }, by: 'n2', why: 'loaded' },
      ]);
    });

    it('modify reads again after a conflict; an unknown tag is EAPPUNKNOWN', async () => {
      const b = await fresh();
      open.push(b);
      const s = new ClusterStore(b, NODES);
      await s.create(app(), by);
      // Another writer gets in between modify's read and its first write.
      let interfered = false;
      const cas = b.compareAndSwap.bind(b);
      b.compareAndSwap = async (tag, expected, record) => {
        if (!interfered) {
          interfered = true;
          await cas(tag, expected, { app: { ...app(), marker: 'the other writer' }, history: [] });
        }
        return cas(tag, expected, record);
      };
      let calls = 0;
      const out = await s.modify('db', (a) => (calls++, { ...a, host: null, state: 'unloaded' }), by);
      expect(calls).toBe(2);
      expect(out.app).toMatchObject({ host: null, state: 'unloaded', marker: 'the other writer' });
      await expect(s.modify('nope', (a) => a, by)).rejects.toMatchObject({ code: 'EAPPUNKNOWN' });
    });

    it('watch reports other writers changes and removals after it resolves, and stops when told', async () => {
      const s = await store();
      const changed: string[] = [];
      const stop = await s.watch((tag) => changed.push(tag));
      const a = await s.create(app(), by);
      await s.create(app({ tag: 'cache' }), by);
      await waitFor(() => changed.includes('db') && changed.includes('cache'), 3000);
      const current = (await s.get('db'))!;
      changed.length = 0; // before the write: an engine may report a change before the writer's call returns (etcd does)
      await s.remove(current);
      await waitFor(() => changed.includes('db'), 3000);
      stop();
      changed.length = 0;
      await s.create({ ...a.app, tag: 'late' }, by);
      await new Promise((r) => setTimeout(r, 300));
      expect(changed).toEqual([]);
    });

    it('a lease makes a node live until it is closed', async () => {
      const s = await store();
      const lease = await s.keepAlive('n2', 2000);
      expect(await s.liveNodes()).toEqual(new Set(['n2']));
      await lease.close();
      expect(await s.liveNodes()).toEqual(new Set());
    });

    it('a record that does not validate is refused on read, naming the field', async () => {
      const b = await fresh();
      open.push(b);
      await b.compareAndSwap('db', 0, { app: { ...app(), backups: ['n1'] }, history: [] });
      await expect(new ClusterStore(b).get('db')).rejects.toMatchObject({ code: 'EAPPINVALID', field: 'backups[0]' });
      await b.compareAndSwap('junk', 0, 'not a record');
      await expect(new ClusterStore(b).list()).rejects.toMatchObject({ code: 'EAPPINVALID' });
    });
  });
}
