// The mirrored log's primary role in the cluster store (src/log/primary-role.ts), on the real
// file store in a temporary directory: a claim on an empty store, a claim refused while the
// holder's lease is live (EMIRRORROLEHELD, nothing written), a returning node told it is a
// backup, a dead holder (a process SIGKILLed) taken over only once its lease ran out, two
// backups claiming at once (exactly one wins, every round), the hold's `lost` signal, a write
// whose answer was lost (maybeWritten), and bad input.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/cluster/file-backend.js';
import { StoreUnavailableError, type StoreBackend } from '../../src/cluster/store-backend.js';
import { LogPrimaryRole, PrimaryRoleError, roleLeaseName } from '../../src/log/primary-role.js';
import { startRoleHolder } from '../log-role-holder.js';
import { KEY, perTestScratch, sleep, until } from './mirror-helpers.js';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { readLog } from '../../src/log/log-reader.js';
import { ReliableClient } from '../../src/reliable/reliable-client.js';
import { ReliableServer } from '../../src/reliable/reliable-server.js';
import { ReliableState } from '../../src/reliable/reliable-state.js';

const scratch = perTestScratch('log-primary-role-');
const storeFile = () => path.join(scratch.root, 'store.json.logs');
const backend = (): FileBackend => {
  const b = new FileBackend(storeFile());
  scratch.open.push(b);
  return b;
};
const role = (node: string, incarnation: bigint, b: StoreBackend = backend(), leaseMs = 600) => new LogPrimaryRole({ backend: b, log: 'orders', node, incarnation, leaseMs });
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error & { code?: string; holder?: { primary: string } });
/** The expiry the file store wrote in a holder's lease file, ms since the epoch (its documented form: one number). */
const leaseExpiry = (node: string) => Number(readFileSync(path.join(scratch.root, '.store.json.logs.nodes', `node-${roleLeaseName('orders', node)}`), 'utf8').trim());

describe('the log primary role (file store)', () => {
  it('a claim on an empty store takes it; another node is refused with the holder named, nothing written; it starts as that node\'s backup', async () => {
    const a = role('a', 11n);
    const hold = await a.claim();
    scratch.open.push({ close: () => hold.release() });
    expect(hold.record).toMatchObject({ log: 'orders', primary: 'a', incarnation: 11n });
    expect(hold.takenFrom).toBeUndefined();
    expect(a.hold).toBe(hold);
    expect(await a.claim()).toBe(hold); // held: the same hold
    const b = role('b', 22n);
    expect(await b.read()).toEqual({ record: hold.record, revision: hold.revision });
    expect(await backend().liveNodes()).toEqual([roleLeaseName('orders', 'a')]);

    const err = await failure(b.claim());
    expect(err).toBeInstanceOf(PrimaryRoleError);
    expect(err).toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: 'a', incarnation: 11n } });
    expect(err!.message).toMatch(/held by a \(incarnation 11/);
    expect((await b.read())!.revision).toBe(hold.revision);
    // The refused claimant's own lease is gone again: only the holder is live.
    expect(await backend().liveNodes()).toEqual([roleLeaseName('orders', 'a')]);
    expect(await b.atStart()).toEqual({ role: 'backup', primary: hold.record });
    expect(b.hold).toBeUndefined();
  });

  it('a node the record names claims again (a restart: new incarnation, new since); a released role is free for another node at once', async () => {
    let t = 1_000;
    const a1 = new LogPrimaryRole({ backend: backend(), log: 'orders', node: 'a', incarnation: 1n, leaseMs: 600, now: () => t });
    const h1 = await a1.claim();
    expect(h1.record.since).toBe(1_000);
    await h1.release();
    expect(await h1.lost).toBe('released');
    t = 2_000;
    const a2 = new LogPrimaryRole({ backend: backend(), log: 'orders', node: 'a', incarnation: 2n, leaseMs: 600, now: () => t });
    const start = await a2.atStart();
    expect(start.role).toBe('primary');
    const h2 = (start as { hold: { record: unknown; revision: number; takenFrom: unknown; release(): Promise<void> } }).hold;
    expect(h2.record).toEqual({ log: 'orders', primary: 'a', incarnation: 2n, since: 2_000 });
    expect(h2.takenFrom).toBeUndefined();
    await h2.release();
    // Released: no live lease, so another node claims without waiting, and is told whom it replaced.
    const b = role('b', 3n);
    const hb = await b.claim();
    scratch.open.push({ close: () => hb.release() });
    expect(hb.takenFrom).toMatchObject({ primary: 'a', incarnation: 2n });
    // The old primary returning is a backup of b.
    expect(await role('a', 4n).atStart()).toMatchObject({ role: 'backup', primary: { primary: 'b', incarnation: 3n } });
  });

  it('a holder SIGKILLed: the backup is refused while its lease runs, and claims only after the expiry the store holds', async () => {
    const leaseMs = 600;
    const holder = await startRoleHolder({ file: storeFile(), log: 'orders', node: 'a', incarnation: 7n, leaseMs }, scratch.children);
    const b = role('b', 8n, backend(), leaseMs);
    expect(await failure(b.claim())).toMatchObject({ code: 'EMIRRORROLEHELD' });
    await holder.kill();
    const killedAt = Date.now();
    const expiry = leaseExpiry('a'); // its last renewal: nobody writes it after the kill
    expect(expiry).toBeGreaterThan(killedAt); // still live at the kill: the backup must wait
    expect(await failure(b.claim())).toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: 'a' } });
    const pollMs = 25;
    const hold = await b.claimWhenFree({ timeoutMs: 5_000, pollMs });
    const claimedAt = Date.now();
    scratch.open.push({ close: () => hold.release() });
    expect(hold.takenFrom).toMatchObject({ primary: 'a', incarnation: 7n });
    expect(hold.record.since).toBeGreaterThanOrEqual(expiry);
    expect(claimedAt).toBeGreaterThanOrEqual(expiry);
    // The promise: within one TTL of the kill (renewed at most TTL/3 before it), plus a poll and 300 ms for a loaded machine.
    expect(claimedAt - killedAt).toBeLessThan(leaseMs + pollMs + 300);
    console.log(`file store, lease ${leaseMs} ms: holder SIGKILLed, its lease ran out ${expiry - killedAt} ms later, the backup claimed ${claimedAt - killedAt} ms after the kill`);
  }, 30_000);

  it('two backups claiming at once after the holder is gone: exactly one wins, the other is refused naming it (50 rounds)', async () => {
    const wins = { b: 0, c: 0 };
    for (let round = 0; round < 50; round++) {
      const log = `orders-${round}`;
      const a = new LogPrimaryRole({ backend: backend(), log, node: 'a', incarnation: 1n, leaseMs: 600 });
      await (await a.claim()).release();
      const b = new LogPrimaryRole({ backend: backend(), log, node: 'b', incarnation: 2n, leaseMs: 600 });
      const c = new LogPrimaryRole({ backend: backend(), log, node: 'c', incarnation: 3n, leaseMs: 600 });
      const results = await Promise.allSettled([b.claim(), c.claim()]);
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i === 0 ? 'b' : 'c'] : []));
      expect(won, `round ${round}`).toHaveLength(1);
      const winner = won[0] as 'b' | 'c';
      wins[winner]++;
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason, `round ${round}`).toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: winner } });
      expect((await b.read())!.record.primary).toBe(winner);
      await (winner === 'b' ? b : c).hold!.release();
    }
    expect(wins.b + wins.c).toBe(50);
    console.log(`50 races of two claimants on the file store: b won ${wins.b}, c won ${wins.c}`);
  }, 60_000);

  it('lost: when the record names another holder, and when the lease cannot be renewed before its TTL ran out', async () => {
    const b1 = backend();
    const a = role('a', 1n, b1);
    const hold = await a.claim();
    // Someone rewrites the record (an operator, or a claim after this lease ran out).
    const stored = await a.read();
    await b1.compareAndSwap('orders', stored!.revision, { format: 'takeover-log-role', log: 'orders', primary: 'z', incarnation: '9', since: 1 });
    expect(await Promise.race([hold.lost, new Promise((r) => setTimeout(() => r('not lost within 2 s'), 2000))])).toMatch(/now names z \(incarnation 9\)/);
    expect(a.hold).toBeUndefined();

    // The lease: its directory replaced by a file, every renewal fails; lost once the TTL ran out.
    const leaseMs = 600;
    const c = new LogPrimaryRole({ backend: backend(), log: 'other', node: 'c', incarnation: 1n, leaseMs });
    const hc = await c.claim();
    const dir = path.join(scratch.root, '.store.json.logs.nodes');
    rmSync(dir, { recursive: true });
    writeFileSync(dir, 'not a directory');
    const broken = Date.now();
    const why = await Promise.race([hc.lost, new Promise<string>((r) => setTimeout(() => r('not lost within 3 s'), 3000))]);
    expect(why).toMatch(/lease of other on c was lost: could not renew/);
    // At most one TTL after its last renewal (<= TTL/3 before the fault) and one renewal period after: 300 ms margin.
    expect(Date.now() - broken).toBeLessThan(leaseMs + leaseMs / 3 + 300);
    rmSync(dir);
    mkdirSync(dir);
  }, 20_000);

  it('a MirroredLog opened with the hold stops acknowledging when the role is lost: appends EMIRRORFENCED, its ReliableServer stops', async () => {
    const b1 = backend();
    const a = role('a', 1n, b1);
    const hold = await a.claim();
    const log = await MirroredLog.open({ dir: path.join(scratch.root, 'log'), key: KEY, node: 'a', state: 'backup-only', hold });
    scratch.open.push(log);
    const server = await ReliableServer.listen({ log, state: new ReliableState<number>({ init: () => 0, apply: (n, r) => ({ state: n + r[0]!, reply: Buffer.from(String(n + r[0]!)) }) }), host: '127.0.0.1', port: 0, node: 'a', incarnation: log.incarnation });
    scratch.open.push(server);
    expect(await log.append(Buffer.from('before'))).toBe(0);
    const failed = new Promise<Error>((r) => log.once('failed', r));
    const stored = await a.read();
    await b1.compareAndSwap('orders', stored!.revision, { format: 'takeover-log-role', log: 'orders', primary: 'z', incarnation: '9', since: 1 });
    expect((await failed).message).toMatch(/may no longer act as primary: the primary role was lost \(.*now names z/);
    await expect(log.append(Buffer.from('after'))).rejects.toMatchObject({ code: 'EMIRRORFENCED' });
    expect(log.failed?.code).toBe('EMIRRORFENCED');
    // The server stops on its next request (its append is refused): the client is told to go elsewhere.
    const client = await ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: server.port }], clientId: 'c1', replyTimeoutMs: 2000, backoff: { minMs: 5, maxMs: 20 } });
    scratch.open.push(client);
    const answered = client.request(Buffer.from([1])).then(() => 'answered', () => 'refused');
    await until(() => server.failed !== null, 3000, 'the server stopped');
    expect(server.failed?.message).toMatch(/may no longer act as primary/);
    expect(await Promise.race([answered, sleep(300).then(() => 'no answer')])).not.toBe('answered');
    await log.close();
    expect((await readLog(path.join(scratch.root, 'log'))).records.map(String)).toEqual(['before']);
  }, 20_000);

  it('a compare-and-swap whose answer was lost (maybeWritten): read again, the claim holds if the record is the one sent, else decided again', async () => {
    const real = backend();
    let mode: 'written' | 'not-written' | 'off' = 'written';
    // The real store, with the answer of the next write lost: after it was applied, or before.
    const lossy: StoreBackend = Object.assign(Object.create(real) as FileBackend, {
      compareAndSwap: async (tag: string, expected: number, record: unknown) => {
        const m = mode;
        mode = 'off';
        if (m === 'written') await real.compareAndSwap(tag, expected, record);
        if (m !== 'off') throw new StoreUnavailableError(real.location, 'no answer', { maybeWritten: true });
        return real.compareAndSwap(tag, expected, record);
      },
    });
    const a = new LogPrimaryRole({ backend: lossy, log: 'orders', node: 'a', incarnation: 1n, leaseMs: 600 });
    const h = await a.claim();
    expect((await a.read())!).toEqual({ record: h.record, revision: h.revision });
    await h.release();
    mode = 'not-written';
    const b = new LogPrimaryRole({ backend: lossy, log: 'orders', node: 'b', incarnation: 2n, leaseMs: 600 });
    const hb = await b.claim();
    expect(hb.takenFrom).toMatchObject({ primary: 'a' });
    expect((await b.read())!.record.primary).toBe('b');
    await hb.release();
  });

  it('bad input is refused with the field named; a record that is not a role record is EMIRRORROLEBAD and left as is', async () => {
    const b = backend();
    const ok = { backend: b, log: 'orders', node: 'a', incarnation: 1n, leaseMs: 600 };
    expect(() => new LogPrimaryRole({ ...ok, log: 'a/b' })).toThrow(/log must be/);
    expect(() => new LogPrimaryRole({ ...ok, log: 'a.b' })).toThrow(/log must be/);
    expect(() => new LogPrimaryRole({ ...ok, node: '' })).toThrow(/node must be/);
    expect(() => new LogPrimaryRole({ ...ok, node: 'a@b' })).toThrow(/node must be/);
    expect(() => new LogPrimaryRole({ ...ok, incarnation: 0n })).toThrow(/incarnation/);
    expect(() => new LogPrimaryRole({ ...ok, leaseMs: 10 })).toThrow(/leaseMs/);
    await expect(new LogPrimaryRole(ok).claimWhenFree({ pollMs: 0 })).rejects.toThrow(RangeError);
    const revision = await b.compareAndSwap('orders', 0, { something: 'else' });
    const err = await failure(new LogPrimaryRole(ok).claim());
    expect(err).toMatchObject({ code: 'EMIRRORROLEBAD' });
    expect(err!.message).toMatch(/role record of orders at revision \d+ is not a takeover-log-role record/);
    expect(await b.read('orders')).toEqual({ tag: 'orders', record: { something: 'else' }, revision });
    expect(await b.liveNodes()).toEqual([]);
  });
});
