// The mirrored log on loopback (src/log/mirrored-log.ts + mirror-backup.ts): when a commit is
// acknowledged in each state, losing the backup (socket closed, link hanging), its return and
// catch-up from disk and memory, divergence and another key refused; after each scenario the
// backup's log equals the primary's.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MirroredLog, type MirroredLogOptions } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { readLog } from '../../src/log/log-reader.js';
import type { MirrorState } from '../../src/log/mirror-state.js';
import { KEY, LinkProxy, OTHER_KEY, perTestScratch, record, sleep, until } from './mirror-helpers.js';

const scratch = perTestScratch('log-mirror-');
const { open } = scratch;

const ACK_TIMEOUT = 400;

async function backupAt(dir = path.join(scratch.root, 'b'), extra: Partial<Parameters<typeof MirrorBackup.listen>[0]> = {}): Promise<MirrorBackup> {
  const b = await MirrorBackup.listen({ dir, host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders', ...extra });
  open.push(b);
  return b;
}

async function primaryTo(port: number, extra: Partial<MirroredLogOptions> = {}, dir = path.join(scratch.root, 'p')): Promise<MirroredLog> {
  const p = await MirroredLog.open({ dir, backup: { host: '127.0.0.1', port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: ACK_TIMEOUT, reconnect: { minMs: 20, maxMs: 100 }, ...extra });
  open.push(p);
  return p;
}

function stateLog(p: MirroredLog): MirrorState[] {
  const seen: MirrorState[] = [p.state];
  p.on('state', (s) => seen.push(s));
  return seen;
}

/** An append whose settlement is observable without awaiting it. */
function tracked(p: Promise<number>) {
  const t = { done: false, lsn: -1, error: null as unknown };
  p.then(
    (lsn) => Object.assign(t, { done: true, lsn }),
    (error) => Object.assign(t, { done: true, error }),
  );
  return t;
}

async function sameLogs(pDir: string, bDir: string): Promise<number> {
  const [p, b] = await Promise.all([readLog(pDir), readLog(bDir)]);
  expect(b.firstLsn).toBe(p.firstLsn);
  expect(b.records.length).toBe(p.records.length);
  expect(b.records.every((r, i) => r.equals(p.records[i]!))).toBe(true);
  return p.records.length;
}

describe('mirrored log', () => {
  it('goes normal once the backup attaches; a commit is acknowledged only when the backup holds it', async () => {
    const b = await backupAt();
    const proxy = await LinkProxy.start(b.port);
    open.push(proxy);
    const p = await primaryTo(proxy.port, { checkpoint: { intervalMs: 20 } });
    const states = stateLog(p);
    await until(() => p.state === 'normal', 3000, 'normal');
    expect(states).toEqual(['primary-only', 'catching-up', 'normal']);
    expect(p.syncPolicy).toBe('checkpoint');
    expect(await p.append(record(0))).toBe(0);
    expect(b.heldLsn).toBe(1);

    // The backup stops reading: appends wait, even once durable on the primary's disk (the
    // checkpoint interval is 20 ms), because normal acknowledges on the backup's ACK only.
    proxy.hold();
    const waiting = [1, 2, 3, 4, 5].map((i) => tracked(p.append(record(i))));
    await sleep(150);
    expect(p.durableLsn).toBe(6);
    expect(waiting.some((w) => w.done)).toBe(false);
    expect(b.heldLsn).toBe(1);
    expect(p.state).toBe('normal');
    proxy.release();
    await until(() => waiting.every((w) => w.done), 2000, 'appends after the backup resumed');
    expect(waiting.map((w) => w.lsn)).toEqual([1, 2, 3, 4, 5]);
    expect(b.heldLsn).toBe(6);
    expect(p.state).toBe('normal');
    expect(p.stats.ackedByBackup).toBe(6);
    expect(p.stats.ackedLocally).toBe(0);
    await p.close();
    await b.close();
    expect(await sameLogs(path.join(scratch.root, 'p'), path.join(scratch.root, 'b'))).toBe(6);
  });

  it('the backup connection destroyed: primary-only at once, waiting appends resolve once durable here, each-commit', async () => {
    const b = await backupAt();
    const proxy = await LinkProxy.start(b.port);
    open.push(proxy);
    // A long checkpoint interval: what waits in RAM is flushed only by leaving normal.
    const p = await primaryTo(proxy.port, { checkpoint: { intervalMs: 60_000 } });
    await until(() => p.state === 'normal', 3000, 'normal');
    await Promise.all([0, 1, 2].map((i) => p.append(record(i))));
    expect(p.durableLsn).toBe(0); // acknowledged by the backup; not yet on the primary's disk
    proxy.hold();
    const waiting = [3, 4, 5, 6].map((i) => tracked(p.append(record(i))));
    await sleep(30);
    expect(waiting.some((w) => w.done)).toBe(false);
    const t0 = performance.now();
    proxy.cut();
    await until(() => p.state === 'primary-only', ACK_TIMEOUT + 200, 'primary-only');
    const switchMs = performance.now() - t0;
    await until(() => waiting.every((w) => w.done), 2000, 'waiting appends');
    expect(waiting.map((w) => w.lsn)).toEqual([3, 4, 5, 6]);
    // Resolved by local durability: the flush on leaving normal made all of it durable.
    expect(p.durableLsn).toBe(7);
    expect(p.syncPolicy).toBe('each-commit');
    expect(p.stats.linkLost.closed).toBeGreaterThanOrEqual(1);
    expect(p.stats.ackedLocally).toBe(4);
    // Primary-only: every commit durable before its ack.
    const lsn = await p.append(record(7));
    expect(p.durableLsn).toBeGreaterThan(lsn);
    expect(switchMs).toBeLessThan(ACK_TIMEOUT + 200);
    await p.close();
    await b.close();
    const pr = await readLog(path.join(scratch.root, 'p'));
    expect(pr.records.length).toBe(8);
    expect((await readLog(path.join(scratch.root, 'b'))).records.length).toBe(3);
  });

  it('a link that hangs (no ACK): primary-only within ackTimeoutMs and a margin', async () => {
    const b = await backupAt();
    const proxy = await LinkProxy.start(b.port);
    open.push(proxy);
    const p = await primaryTo(proxy.port);
    await until(() => p.state === 'normal', 3000, 'normal');
    proxy.silence();
    const t0 = performance.now();
    const w = tracked(p.append(record(0)));
    await until(() => p.state === 'primary-only', ACK_TIMEOUT * 1.25 + 300, 'primary-only after the ACK timeout');
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(ACK_TIMEOUT);
    await until(() => w.done, 1000, 'the append');
    expect(w.lsn).toBe(0);
    expect(p.stats.linkLost['ack-timeout']).toBe(1);
    // An idle link hanging is noticed too: the keepalives go unanswered.
    proxy.up();
    await until(() => p.state === 'normal', 3000, 'normal again');
    proxy.silence();
    await until(() => p.state === 'primary-only', ACK_TIMEOUT * 1.25 + ACK_TIMEOUT / 3 + 300, 'primary-only on an idle link');
    expect(p.stats.linkLost['ack-timeout']).toBe(2);
    expect(p.stats.keepalives).toBeGreaterThan(0);
  });

  it('the backup returns: catch-up from the primary\'s disk and memory while appends go on, then normal; logs equal', async () => {
    const b = await backupAt();
    const proxy = await LinkProxy.start(b.port);
    open.push(proxy);
    const p = await primaryTo(proxy.port, { catchUpChunkRecords: 500 });
    await until(() => p.state === 'normal', 3000, 'normal');
    let n = 0;
    await Promise.all(Array.from({ length: 50 }, () => p.append(record(n++))));
    proxy.cut();
    await until(() => p.state === 'primary-only', 1000, 'primary-only');
    // Primary-only: 3,000 records, each durable here before its ack (10 appenders).
    await Promise.all(Array.from({ length: 10 }, async () => {
      for (let i = 0; i < 300; i++) await p.append(record(n++, 100));
    }));
    expect(p.durableLsn).toBe(n);
    const states = stateLog(p);
    proxy.up();
    // Appends go on during the catch-up: the newest come from memory.
    let stop = false;
    const writers = Array.from({ length: 4 }, async () => {
      while (!stop) await p.append(record(n++, 60));
    });
    await until(() => p.state === 'normal', 5000, () => 'normal after catch-up ' + JSON.stringify({ state: p.state, acked: p.ackedLsn, held: p.backupHeldLsn, next: p.nextLsn, durable: p.durableLsn, sw: (p as any).switchAt, st: p.stats, states }));
    await sleep(50);
    stop = true;
    await Promise.all(writers);
    expect(states.slice(0, 3)).toEqual(['primary-only', 'catching-up', 'normal']);
    expect(p.stats.recordsFromDisk).toBeGreaterThanOrEqual(3000);
    expect(p.stats.recordsSent).toBeGreaterThan(p.stats.recordsFromDisk + 50);
    await until(() => b.heldLsn === p.nextLsn, 2000, 'backup holds everything');
    await p.close();
    await b.close();
    expect(await sameLogs(path.join(scratch.root, 'p'), path.join(scratch.root, 'b'))).toBe(n);
  });

  it('frames stay within what the backup accepts: 20,000 empty records (their length fields count), a record of maxRecordBytes', async () => {
    const b = await backupAt(undefined, { maxRecordBytes: 1024, maxFrameBytes: 64 * 1024 + 200 });
    // About frames, not timing: an ACK timeout well above what 20,000 appends in one turn can
    // take on a loaded machine (a run under load left normal at the 400 ms of the other tests).
    const p = await primaryTo(b.port, { maxRecordBytes: 1024, frameBytes: 64 * 1024, ackTimeoutMs: 5000 });
    await until(() => p.state === 'normal', 3000, 'normal');
    await Promise.all(Array.from({ length: 20_000 }, () => p.append(Buffer.alloc(0))));
    await p.append(Buffer.alloc(1024, 7));
    await expect(p.append(Buffer.alloc(1025))).rejects.toMatchObject({ code: 'ELOGRECORDSIZE' });
    expect(p.state).toBe('normal');
    expect(Object.values(b.stats.rejected).every((n) => n === 0)).toBe(true);
    expect(b.heldLsn).toBe(20_001);
    await p.close();
    await b.close();
    expect(await sameLogs(path.join(scratch.root, 'p'), path.join(scratch.root, 'b'))).toBe(20_001);
  });

  it('a backup that holds other records (divergence) is refused, counted, left as it is', async () => {
    const bDir = path.join(scratch.root, 'b');
    const pDir = path.join(scratch.root, 'p');
    for (const [dir, tag] of [[pDir, 'p'], [bDir, 'b']] as const) {
      const w = await LogWriter.open({ dir });
      for (let i = 0; i < 5; i++) await w.append(Buffer.from(`${tag}${i}`));
      await w.close();
    }
    const b = await backupAt(bDir);
    const refused: string[] = [];
    b.on('refused', (r) => refused.push(`${r.refusal}:${r.error.code}`));
    const p = await primaryTo(b.port, {}, pDir);
    const link: string[] = [];
    p.on('link', (e) => link.push(e.type === 'refused' ? `${e.refusal}:${e.error.code}` : e.type));
    await until(() => p.stats.refused.diverged >= 1 && refused.length >= 1, 3000, 'refusal');
    expect(link).toContain('diverged:EMIRRORDIVERGED');
    expect(refused[0]).toBe('diverged:EMIRRORDIVERGED');
    expect(p.state).toBe('primary-only');
    expect(b.heldLsn).toBe(5);
    expect(b.stats.recordsReceived).toBe(0);
    expect(await p.append(Buffer.from('p5'))).toBe(5);
    await p.close();
    await b.close();
    expect((await readLog(bDir)).records.map(String)).toEqual(['b0', 'b1', 'b2', 'b3', 'b4']);
  });

  it('a backup holding more records than the primary (beyond its next LSN) is refused as diverged', async () => {
    const bDir = path.join(scratch.root, 'b');
    const w = await LogWriter.open({ dir: bDir });
    for (let i = 0; i < 3; i++) await w.append(record(i));
    await w.close();
    const b = await backupAt(bDir);
    const p = await primaryTo(b.port);
    await until(() => p.stats.refused.diverged >= 1, 3000, 'refusal');
    expect(p.state).toBe('primary-only');
    expect(b.heldLsn).toBe(3);
  });

  it('a backup that is behind but agrees (same records) catches up; another log name is refused', async () => {
    const pDir = path.join(scratch.root, 'p');
    const bDir = path.join(scratch.root, 'b');
    for (const [dir, count] of [[pDir, 20], [bDir, 12]] as const) {
      const w = await LogWriter.open({ dir });
      for (let i = 0; i < count; i++) await w.append(record(i));
      await w.close();
    }
    const other = await backupAt(path.join(scratch.root, 'other'), { log: 'ledger' });
    const p0 = await primaryTo(other.port, {}, path.join(scratch.root, 'p0'));
    await until(() => p0.stats.refused.log >= 1, 3000, 'log refusal');
    await p0.close();
    const b = await backupAt(bDir);
    const p = await primaryTo(b.port, {}, pDir);
    await until(() => p.state === 'normal', 3000, 'normal');
    expect(b.heldLsn).toBe(20);
    expect(p.stats.recordsFromDisk).toBe(8);
    await p.close();
    await b.close();
    expect(await sameLogs(pDir, bDir)).toBe(20);
  });

  it('a backup whose records differ before its last one is refused (diverged) whether or not its last record is the primary\'s; one that agrees catches up (chains over 5,000 records read from disk)', async () => {
    // 5,000 records: more than one of the chain's kept points (every 4,096), so the primary
    // folds records read from its disk from the point below what the backup holds.
    const all = Array.from({ length: 5000 }, (_, i) => record(i));
    const pDir = path.join(scratch.root, 'p');
    const write = async (dir: string, records: Buffer[]) => {
      const w = await LogWriter.open({ dir });
      for (const r of records) w.append(r).catch(() => {});
      await w.close();
    };
    await write(pDir, all);
    const cases = [
      { name: 'differs at 4500, same last record', held: 5000, alter: 4500, attaches: false },
      { name: 'differs at 100, same last record', held: 4700, alter: 100, attaches: false },
      { name: 'differs at 4200, same last record, past the kept point', held: 4700, alter: 4200, attaches: false },
      { name: 'agrees, past the kept point', held: 4700, alter: -1, attaches: true },
      { name: 'agrees, below the kept point', held: 3000, alter: -1, attaches: true },
    ];
    for (const c of cases) {
      const bDir = path.join(scratch.root, `b-${c.held}-${c.alter}`);
      await write(bDir, all.slice(0, c.held).map((r, i) => (i === c.alter ? Buffer.from(`another record ${i}`) : r)));
      const b = await backupAt(bDir);
      const p = await primaryTo(b.port, {}, pDir);
      if (c.attaches) {
        await until(() => p.state === 'normal', 5000, `${c.name}: normal`);
        expect(p.stats.recordsFromDisk, c.name).toBe(5000 - c.held);
        expect(p.stats.refused.diverged, c.name).toBe(0);
      } else {
        await until(() => p.stats.refused.diverged >= 1, 5000, `${c.name}: refused`);
        expect(p.state, c.name).toBe('primary-only');
        expect(p.stats.attached, c.name).toBe(0);
        expect(b.stats.recordsReceived, c.name).toBe(0);
      }
      await p.close();
      await b.close();
      if (c.attaches) expect(await sameLogs(pDir, bDir)).toBe(5000);
      else expect((await readLog(bDir)).records.length).toBe(c.held);
    }
  });

  it('another key: the primary refuses the HELLO (hmac), counts it, stays primary-only; nothing reaches the backup, which reports the connections closed before any START', async () => {
    const b = await backupAt();
    const seen: string[] = [];
    b.on('rejected', (r) => seen.push(`${r.reason}: ${r.error.message}`));
    const p = await primaryTo(b.port, { key: OTHER_KEY });
    await until(() => p.stats.rejected.hmac >= 2, 3000, 'two refused HELLOs');
    expect(p.state).toBe('primary-only');
    expect(p.stats.attached).toBe(0);
    expect(p.stats.linkLost.auth).toBeGreaterThanOrEqual(2);
    await p.append(record(0));
    expect(b.heldLsn).toBe(0);
    expect(b.stats.recordsReceived).toBe(0);
    expect(b.attached).toBe(false);
    await until(() => b.stats.closedBeforeStart >= 2, 3000, 'the backup to report the closed handshakes');
    expect(seen[0]).toMatch(/^handshake: .* closed the connection before any START: a primary with another key/);
  });

  it('close(): appends pending resolve once durable here; later ones are refused (EMIRRORCLOSED)', async () => {
    const b = await backupAt();
    const proxy = await LinkProxy.start(b.port);
    open.push(proxy);
    const p = await primaryTo(proxy.port, { checkpoint: { intervalMs: 60_000 } });
    await until(() => p.state === 'normal', 3000, 'normal');
    proxy.hold();
    const waiting = [0, 1, 2].map((i) => tracked(p.append(record(i))));
    await sleep(20);
    await p.close();
    expect(waiting.every((w) => w.done && w.error === null)).toBe(true);
    expect((await readLog(path.join(scratch.root, 'p'))).records.length).toBe(3);
    await expect(p.append(record(3))).rejects.toMatchObject({ code: 'EMIRRORCLOSED' });
  });
});
