// The log mirror under faults: a backup process SIGKILLed mid-load (no commit acknowledged that
// neither the backup had said it held nor the primary had on disk), bytes from a peer with
// another key, a gap in LSNs, seeded mutations of valid streams into a live backup (each refused
// and counted, nothing appended), and no fd left open.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { bundledScript } from '../../src/lab/node-child.js';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { readLog } from '../../src/log/log-reader.js';
import { LogWriter } from '../../src/log/log-writer.js';
import { MirrorFrameReader, type MirrorFrame } from '../../src/log/mirror-wire.js';
import { BACKUP_INC, BACKUP_NONCE, frame, KEY, mutateStream, OTHER_KEY, perTestScratch, primaryStream, record, seededRandom, sleep, until } from './mirror-helpers.js';
import { encodeMirrorFrame } from '../../src/log/mirror-wire.js';
import { faultyFileOps } from './log-fault-ops.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'mirror-backup-child.ts');

const scratch = perTestScratch('log-mirror-faults-');
const { open, children } = scratch;

/** The backup as a child process; resolves once it listens. `held` lists the LSNs of its ACKs, in order. */
async function startChild(dir: string, port: number) {
  const child = spawn(process.execPath, [bundledScript(CHILD, 'test-'), dir, String(port), KEY.toString('hex')], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const held: number[] = [];
  let stderr = '';
  let buf = '';
  let info: { port: number; held: number } | null = null;
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) info = JSON.parse(line) as { port: number; held: number };
      else if (line.startsWith('held ')) held.push(Number(line.slice(5)));
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await until(() => info !== null || child.exitCode !== null, 20_000, `the backup child to listen (stderr: ${stderr})`);
  if (!info) throw new Error(`the backup child exited: ${stderr}`);
  // Every line written before the exit has been read once stdout ends.
  const drained = new Promise<void>((r) => child.stdout.once('end', () => r()));
  return { child, held, info: info as { port: number; held: number }, exited: Promise.all([exited, drained]).then(() => {}), stderr: () => stderr };
}

/** A raw connection to a backup, standing where a primary would: the backup's HELLO read. */
async function rawPrimary(port: number): Promise<{ socket: net.Socket; hello: MirrorFrame; closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  const reader = new MirrorFrameReader({ role: 'primary' }, { key: KEY });
  const hello = await new Promise<MirrorFrame>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      for (const r of reader.push(d)) if (r.ok && r.frame.message.type === 'hello') resolve(r.frame);
    });
    socket.once('close', () => reject(new Error('closed before HELLO')));
  });
  return { socket, hello, closed };
}

const sessionOf = (hello: MirrorFrame) => ({ backupNonce: hello.backupNonce, backupIncarnation: hello.senderIncarnation });
const rejections = (b: MirrorBackup) => Object.values(b.stats.rejected).reduce((a, n) => a + n, 0) + b.stats.gaps + b.stats.timeouts;

describe('log mirror faults', () => {
  it('backup process SIGKILLed mid-load: every acknowledged commit was held by the backup before the kill or durable on the primary', async () => {
    const bDir = path.join(scratch.root, 'b');
    const pDir = path.join(scratch.root, 'p');
    const first = await startChild(bDir, 0);
    const port = first.info.port;
    const p = await MirroredLog.open({ dir: pDir, backup: { host: '127.0.0.1', port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 400, reconnect: { minMs: 20, maxMs: 100 } });
    open.push(p);
    await until(() => p.state === 'normal', 5000, 'normal');
    const acked: { lsn: number; durable: number; state: string }[] = [];
    let stop = false;
    let n = 0;
    const appenders = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const lsn = await p.append(record(n++, 200));
        acked.push({ lsn, durable: p.durableLsn, state: p.state });
      }
    });
    await until(() => acked.length >= 2000, 10_000, 'load');
    first.child.kill('SIGKILL');
    const killedAt = performance.now();
    await first.exited;
    await until(() => p.state === 'primary-only', 1000, 'primary-only after the kill');
    const switchMs = performance.now() - killedAt;
    await sleep(100); // appends go on, primary-only
    stop = true;
    await Promise.all(appenders);

    const maxHeld = Math.max(...first.held);
    const unjustified = acked.filter((a) => !(a.lsn < maxHeld || a.lsn < a.durable));
    expect(unjustified).toEqual([]);
    const inNormal = acked.filter((a) => a.state === 'normal').length;
    expect(inNormal).toBeGreaterThan(1000);
    expect(p.stats.ackedByBackup).toBeGreaterThan(1000);
    expect(p.stats.ackedLocally).toBeGreaterThan(0);
    expect(switchMs).toBeLessThan(400 * 1.25 + 200);
    // What the killed backup left on disk is a prefix of the primary's records.
    const left = await readLog(bDir);
    const mine = await readLog(pDir);
    expect(left.records.length).toBeLessThanOrEqual(maxHeld);
    expect(left.records.every((r, i) => r.equals(mine.records[i]!))).toBe(true);

    // It comes back on the same port: caught up from the primary's disk, normal, the same log.
    const second = await startChild(bDir, port);
    expect(second.info.held).toBe(left.records.length);
    await until(() => p.state === 'normal', 10_000, 'normal after the backup restarted');
    await p.append(record(n++));
    await until(() => second.held.at(-1) === p.nextLsn, 3000, 'the backup holds everything');
    second.child.kill('SIGTERM');
    await second.exited;
    await p.close();
    const pr = await readLog(pDir);
    const br = await readLog(bDir);
    expect(br.records.length).toBe(pr.records.length);
    expect(br.records.every((r, i) => r.equals(pr.records[i]!))).toBe(true);
    for (const a of acked) expect(pr.records[a.lsn]!.equals(record(a.lsn, 200)) || pr.records[a.lsn]!.length === 200).toBe(true);
  }, 40_000);

  it('frames under another key, a START or RECORDS that leave a gap: refused, counted, closed, nothing appended', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(b);
    const errors: string[] = [];
    b.on('rejected', (r) => errors.push(`${r.reason}:${r.error.code}`));

    let c = await rawPrimary(b.port);
    c.socket.write(primaryStream(0, 1, 3, sessionOf(c.hello), OTHER_KEY)[0]!);
    await c.closed;
    expect(b.stats.rejected.hmac).toBe(1);

    c = await rawPrimary(b.port);
    c.socket.write(primaryStream(5, 1, 3, sessionOf(c.hello))[0]!); // START from 5, the backup holds nothing
    await c.closed;
    expect(b.stats.gaps).toBe(1);

    c = await rawPrimary(b.port);
    const [start] = primaryStream(0, 1, 3, sessionOf(c.hello)) as [Buffer];
    c.socket.write(start);
    c.socket.write(frame('primary', 1n, { type: 'records', firstLsn: 1, records: [record(1)] }, KEY, sessionOf(c.hello)));
    await c.closed;
    expect(b.stats.gaps).toBe(2);
    expect(errors).toEqual(['hmac:EMIRRORAUTH', 'gap:EMIRRORPROTO', 'gap:EMIRRORPROTO']);
    expect(b.heldLsn).toBe(0);

    // The same records, in order, are taken.
    c = await rawPrimary(b.port);
    const good = primaryStream(0, 1, 3, sessionOf(c.hello));
    c.socket.write(Buffer.concat(good));
    await until(() => b.heldLsn === 3, 2000, 'records held');
    c.socket.destroy();
  });

  it('one primary at a time: a newer authenticated START replaces the older connection', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(b);
    const one = await rawPrimary(b.port);
    one.socket.write(Buffer.concat(primaryStream(0, 1, 2, sessionOf(one.hello))));
    await until(() => b.heldLsn === 2, 2000, 'first primary');
    const two = await rawPrimary(b.port);
    expect(two.hello.message).toMatchObject({ type: 'hello', heldLsn: 2 });
    // A connection that never sends START does not displace the attached one...
    await sleep(50);
    expect(b.stats.replaced).toBe(0);
    // ...its START does.
    two.socket.write(Buffer.concat(primaryStream(2, 1, 2, sessionOf(two.hello))));
    await one.closed;
    await until(() => b.heldLsn === 4, 2000, 'second primary');
    expect(b.stats.replaced).toBe(1);
    expect(b.stats.attached).toBe(2);
    two.socket.destroy();
  });

  it("the primary refuses a backup's bad frames and ACKs for what it never sent (counted, link lost, redialled)", async () => {
    // A fake backup: a good HELLO, then per connection one kind of bad input.
    const kinds = ['garbage', 'ack beyond', 'ack of a future frame'];
    let conn = 0;
    const server = net.createServer((s) => {
      s.on('error', () => {});
      const kind = kinds[conn++ % kinds.length]!;
      if (kind === 'garbage') {
        // Not a frame: its first four bytes read as a length far above the largest frame.
        s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
        return;
      }
      s.write(frame('backup', 0n, { type: 'hello', log: 'orders', node: 'fake', firstLsn: 0, heldLsn: 0, lastCrc: 0 }));
      const reader = new MirrorFrameReader({ role: 'backup', incarnation: BACKUP_INC, nonce: BACKUP_NONCE }, { key: KEY });
      s.on('data', (d: Buffer) => {
        for (const r of reader.push(d)) {
          if (!r.ok || r.frame.message.type !== 'start') continue;
          const session = { senderIncarnation: BACKUP_INC, receiverIncarnation: r.frame.senderIncarnation, backupNonce: BACKUP_NONCE, primaryNonce: r.frame.primaryNonce, seq: 1n };
          const message = kind === 'ack beyond' ? { type: 'ack' as const, heldLsn: 50, durableLsn: 0, frameSeq: 0n } : { type: 'ack' as const, heldLsn: 0, durableLsn: 0, frameSeq: 9n };
          s.write(encodeMirrorFrame({ ...session, message }, KEY));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    open.push({ close: () => new Promise<void>((r) => server.close(() => r())) });
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 300, reconnect: { minMs: 10, maxMs: 20 } });
    open.push(p);
    await until(() => p.stats.rejected.length >= 1 && p.stats.badAcks >= 2, 5000, `refusals (${JSON.stringify(p.stats)})`);
    expect(p.stats.linkLost.protocol).toBeGreaterThanOrEqual(3);
    expect(p.state).not.toBe('normal');
    expect(await p.append(record(0))).toBe(0);
  });

  it("the primary's log failing (fdatasync EIO): pending appends and later ones get EMIRRORFAILED, never an ack", async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(b);
    const ops = faultyFileOps();
    const p = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: '127.0.0.1', port: 1 }, key: KEY, node: 'node-a', log: 'orders', fileOps: ops, reconnect: { minMs: 1000 } });
    open.push(p);
    await p.append(record(0)); // primary-only (nobody at port 1): durable before its ack
    ops.plan.datasyncFails = 'EIO';
    const failed = new Promise((r) => p.once('failed', r));
    const results = await Promise.allSettled([1, 2, 3].map((i) => p.append(record(i))));
    await failed;
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'EMIRRORFAILED' });
    await expect(p.append(record(4))).rejects.toMatchObject({ code: 'EMIRRORFAILED' });
    expect(p.failed?.code).toBe('EMIRRORFAILED');
    expect(p.ackedLsn).toBe(1);
  });

  it('fuzz: 150 seeded mutations of valid streams into a live backup: each refused and counted once, nothing appended', async () => {
    const b = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders', maxRecordBytes: 4096, handshakeTimeoutMs: 2000 });
    open.push(b);
    const { int } = seededRandom(0xf022);
    const reasons = new Set<string>();
    b.on('rejected', (r) => reasons.add(r.reason));
    const t0 = performance.now();
    for (let iter = 0; iter < 150; iter++) {
      const c = await rawPrimary(b.port);
      const held = b.heldLsn;
      const before = rejections(b);
      // START + one RECORDS frame, mutated. A mutation that leaves the whole valid stream in
      // front (garbage after it, its RECORDS replayed) is drawn again: the backup rightly takes
      // those records, and what follows valid records is the decoder test's business.
      const ref = () => new MirrorFrameReader({ role: 'backup', incarnation: c.hello.senderIncarnation, nonce: c.hello.backupNonce }, { key: KEY, maxRecordBytes: 4096 });
      const validRecords = (b: Buffer) => ref().push(b).reduce((k, r) => k + (r.ok && r.frame.message.type === 'records' ? r.frame.message.records.length : 0), 0);
      let m = mutateStream(primaryStream(held, 1, 1 + int(5), sessionOf(c.hello)), int);
      while (validRecords(m.bytes) > 0) m = mutateStream(primaryStream(held, 1, 1 + int(5), sessionOf(c.hello)), int);
      const { bytes, how } = m;
      c.socket.end(bytes);
      await c.closed;
      await until(() => rejections(b) === before + 1, 2000, `the refusal of "${how}"`);
      expect(b.heldLsn, how).toBe(held);
    }
    expect(b.heldLsn).toBe(0);
    expect(b.stats.recordsReceived).toBe(0);
    expect([...reasons].sort()).toEqual(expect.arrayContaining(['hmac', 'length', 'magic', 'short', 'unexpected']));
    expect(performance.now() - t0).toBeLessThan(15_000);
    // The backup still takes a good stream afterwards.
    const c = await rawPrimary(b.port);
    c.socket.write(Buffer.concat(primaryStream(0, 2, 2, sessionOf(c.hello))));
    await until(() => b.heldLsn === 4, 2000, 'records after the fuzz');
    c.socket.destroy();
  }, 30_000);

  it('no fd left open: primary and backup opened, attached, refused, cut and closed, many times', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    // One round first: whatever is opened once per process (crypto, the thread pool) is opened.
    const round = async (i: number) => {
      const bDir = path.join(scratch.root, `b${i}`);
      const b = await MirrorBackup.listen({ dir: bDir, host: '127.0.0.1', port: 0, key: KEY, node: 'node-b', log: 'orders' });
      const p = await MirroredLog.open({ dir: path.join(scratch.root, `p${i}`), backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 200, reconnect: { minMs: 10, maxMs: 20 }, segmentBytes: 4096 });
      await until(() => p.state === 'normal', 3000, 'normal');
      await Promise.all(Array.from({ length: 100 }, (_, k) => p.append(record(k, 100))));
      // Another key, and a log that diverged.
      const wrong = await MirroredLog.open({ dir: path.join(scratch.root, `w${i}`), backup: { host: '127.0.0.1', port: b.port }, key: OTHER_KEY, node: 'node-x', log: 'orders', ackTimeoutMs: 200 });
      await until(() => wrong.stats.rejected.hmac >= 1, 3000, 'hmac');
      await wrong.close();
      const dDir = path.join(scratch.root, `d${i}`);
      const w = await LogWriter.open({ dir: dDir });
      await w.append(Buffer.from('other'));
      await w.close();
      const diverged = await MirroredLog.open({ dir: dDir, backup: { host: '127.0.0.1', port: b.port }, key: KEY, node: 'node-y', log: 'orders', ackTimeoutMs: 200 });
      await until(() => diverged.stats.refused.diverged >= 1, 3000, 'diverged');
      await diverged.close();
      // A primary dialling nobody.
      const lonely = await MirroredLog.open({ dir: path.join(scratch.root, `l${i}`), backup: { host: '127.0.0.1', port: 1 }, key: KEY, node: 'node-z', log: 'orders', reconnect: { minMs: 5, maxMs: 10 } });
      await lonely.append(Buffer.from('x'));
      await sleep(30);
      await lonely.close();
      await p.close();
      await b.close();
      // Connections that closed: let their handles finish.
      await sleep(20);
    };
    await round(0);
    const before = fds();
    for (let i = 1; i <= 4; i++) await round(i);
    expect(fds()).toBe(before);
  }, 40_000);
});
