// MirrorWatch on loopback (src/log/mirror-watch.ts): a primary (MirroredLog) and its backup
// (MirrorBackup) in this process, heartbeats between them on a main and a failsafe UDP link, each
// through a relay the test can cut, the mirror's TCP through a LinkProxy. Seed 004 steps 415-425:
// the primary silent on every path -> the backup takes over after its fencing hook; only the
// mirror's link cut -> link failure, no takeover; one heartbeat link lost -> normal goes on,
// reported; no hook and no unsafe flag -> refused.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundledScript } from '../../src/lab/node-child.js';
import { describe, expect, it } from 'vitest';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { MirrorWatch, type MirrorWatchOptions, type WatchTakeover } from '../../src/log/mirror-watch.js';
import type { MirrorFailureDecision } from '../../src/log/mirror-failure.js';
import { takeOverFenced } from '../../src/log/takeover.js';
import { MirrorError } from '../../src/log/mirror-errors.js';
import { KEY, LinkProxy, perTestScratch, record, sleep, until } from './mirror-helpers.js';

const HB_KEY = Buffer.from('mirror-watch heartbeat key......');
const INTERVAL = 100;
const MISSES = 3;
const H = '127.0.0.1';
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'mirror-watch-primary-child.ts');

const scratch = perTestScratch('log-mirror-watch-');
const { open } = scratch;

/**
 * Four distinct UDP ports on loopback, held (bound) until release(): the sockets a test binds to
 * port 0 meanwhile (the links' forwarders) cannot be given one of them. Picked and freed one at
 * a time, a CI run saw a heartbeat's bind fail with EADDRINUSE.
 */
async function holdUdpPorts(): Promise<{ ports: [number, number, number, number]; release: () => Promise<void> }> {
  const sockets = [0, 1, 2, 3].map(() => dgram.createSocket('udp4'));
  await Promise.all(sockets.map((s) => new Promise<void>((r) => s.bind(0, H, () => r()))));
  const ports = sockets.map((s) => s.address().port) as [number, number, number, number];
  return { ports, release: () => Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => undefined) };
}

/** holdUdpPorts() released at once: for a child process that binds them itself. */
async function freeUdpPorts(): Promise<[number, number, number, number]> {
  const held = await holdUdpPorts();
  await held.release();
  return held.ports;
}

/** One heartbeat link between a (primary) and b (backup): a socket per direction that forwards; cut() drops both ways. */
class UdpLink {
  down = false;
  private constructor(
    readonly toB: dgram.Socket,
    readonly toA: dgram.Socket,
  ) {}
  static async start(aPort: number, bPort: number): Promise<UdpLink> {
    const mk = async (target: number) => {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, H, () => r()));
      return { s, target };
    };
    const [x, y] = await Promise.all([mk(bPort), mk(aPort)]);
    const link = new UdpLink(x.s, y.s);
    for (const { s, target } of [x, y]) {
      s.on('message', (m) => {
        if (!link.down) s.send(m, target, H);
      });
      s.on('error', () => {});
    }
    return link;
  }
  get portToB(): number {
    return this.toB.address().port;
  }
  get portToA(): number {
    return this.toA.address().port;
  }
  close(): void {
    this.toB.close();
    this.toA.close();
  }
}

const clock = () => performance.timeOrigin + performance.now();

interface Pair {
  log: MirroredLog;
  backup: MirrorBackup;
  proxy: LinkProxy;
  main: UdpLink;
  failsafe: UdpLink;
  primaryWatch: MirrorWatch;
  backupWatch: MirrorWatch;
  verdicts: MirrorFailureDecision[];
  takeovers: WatchTakeover[];
  replayed: Buffer[];
  hookCalls: Array<{ at: number; promoted: boolean }>;
  /** A new life of the primary's watch on the same links (the old primary back). */
  restartPrimaryWatch: () => Promise<MirrorWatch>;
}

/** Both nodes, attached and in normal, with `n` records committed. */
async function pair(n = 50, backupExtra: Partial<MirrorWatchOptions> = {}): Promise<Pair> {
  const backup = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: H, port: 0, key: KEY, node: 'node-b', log: 'orders' });
  open.push(backup);
  const proxy = await LinkProxy.start(backup.port);
  open.push(proxy);
  const held = await holdUdpPorts();
  const [pa0, pa1, pb0, pb1] = held.ports;
  const main = await UdpLink.start(pa0, pb0);
  const failsafe = await UdpLink.start(pa1, pb1);
  open.push(main, failsafe);
  await held.release();
  const log = await MirroredLog.open({ dir: path.join(scratch.root, 'p'), backup: { host: H, port: proxy.port }, key: KEY, node: 'node-a', log: 'orders', ackTimeoutMs: 400, reconnect: { minMs: 20, maxMs: 100 } });
  open.push(log);
  const common = { key: HB_KEY, intervalMs: INTERVAL, misses: MISSES };
  const startPrimaryWatch = async () => {
    const w = await MirrorWatch.start({ ...common, role: 'primary', node: 'node-a', peer: 'node-b', log, links: { main: { address: H, port: pa0 }, failsafe: { address: H, port: pa1 } }, peerLinks: { main: { address: H, port: main.portToB }, failsafe: { address: H, port: failsafe.portToB } } });
    open.push(w);
    return w;
  };
  const primaryWatch = await startPrimaryWatch();
  const replayed: Buffer[] = [];
  const hookCalls: Pair['hookCalls'] = [];
  const backupWatch = await MirrorWatch.start({
    ...common,
    role: 'backup',
    node: 'node-b',
    peer: 'node-a',
    backup,
    links: { main: { address: H, port: pb0 }, failsafe: { address: H, port: pb1 } },
    peerLinks: { main: { address: H, port: main.portToA }, failsafe: { address: H, port: failsafe.portToA } },
    takeover: { key: KEY, node: 'node-b', log: 'orders', replay: (_lsn, p) => replayed.push(Buffer.from(p)) },
    mirrorQuietMs: 400,
    beforeTakeover: async () => {
      hookCalls.push({ at: clock(), promoted: backup.promoted });
      await sleep(20); // a fence takes a moment
    },
    ...backupExtra,
  });
  open.push(backupWatch);
  const verdicts: MirrorFailureDecision[] = [];
  backupWatch.on('verdict', (d) => verdicts.push(d));
  const takeovers: WatchTakeover[] = [];
  backupWatch.on('takeover', (t) => {
    takeovers.push(t);
    open.push(t.result.log);
  });
  for (let i = 0; i < n; i++) await log.append(record(i));
  await until(() => log.state === 'normal' && backupWatch.decision?.verdict === 'normal' && primaryWatch.report?.main === true && primaryWatch.report.failsafe === true, 5000, () => `normal: log ${log.state}, backup ${backupWatch.decision?.verdict}`);
  return { log, backup, proxy, main, failsafe, primaryWatch, backupWatch, verdicts, takeovers, replayed, hookCalls, restartPrimaryWatch: startPrimaryWatch };
}

describe('MirrorWatch', () => {
  it('(a) in-process, heartbeats stopped on both links and the TCP closed: the backup takes over within misses x interval + margin, after the fencing hook', async () => {
    const p = await pair(200);
    const timeout = p.backupWatch.timeoutMs;
    expect(timeout).toBe(INTERVAL * MISSES + 25);
    // The primary "dies": its heartbeats stop on both links and its TCP connection closes.
    const killedAt = clock();
    p.primaryWatch.close();
    p.proxy.cut();
    await until(() => p.takeovers.length === 1, 3000, () => `takeover: verdict ${p.backupWatch.decision?.verdict}`);
    const t = p.takeovers[0]!;
    const detect = t.decidedAt - killedAt;
    console.log(`primary silent -> primary-failure decided ${detect.toFixed(0)} ms (timeout ${timeout} ms), fenced +${(t.fencedAt! - t.decidedAt).toFixed(0)} ms, taken over +${(t.doneAt - t.decidedAt).toFixed(0)} ms; last heard ${(killedAt - t.lastHeardAt!).toFixed(0)} ms before the stop`);
    // Never before the detector's timeout of silence after the last heartbeat heard.
    expect(t.decidedAt - t.lastHeardAt!).toBeGreaterThanOrEqual(timeout - 1);
    expect(detect).toBeLessThan(timeout + 250);
    // The verdicts went link-failure (the TCP closed at once) then primary-failure.
    expect(p.verdicts.map((v) => v.verdict)).toContain('primary-failure');
    expect(p.verdicts.at(-1)!.verdict).toBe('primary-failure');
    // The hook ran once, before takeOver() touched the backup, and the takeover after it.
    expect(p.hookCalls).toHaveLength(1);
    expect(p.hookCalls[0]!.promoted).toBe(false);
    expect(t.fencedAt!).toBeGreaterThanOrEqual(p.hookCalls[0]!.at + 15);
    expect(t.doneAt).toBeGreaterThanOrEqual(t.fencedAt!);
    // Backup-only, every acknowledged record replayed.
    expect(t.result.log.state).toBe('backup-only');
    expect(p.replayed.length).toBe(200);
    expect(p.replayed.every((r, i) => r.equals(record(i)))).toBe(true);
    expect(await t.result.log.append(record(200))).toBe(200);
    // The old primary back (seed step 460): reported, nothing else; the takeover is not undone.
    const returned = new Promise<{ incarnation: bigint }>((r) => p.backupWatch.once('primary-returned', r));
    await p.restartPrimaryWatch();
    expect((await returned).incarnation).toBeGreaterThan(0n);
    expect(p.takeovers).toHaveLength(1);
    expect(t.result.log.state).toBe('backup-only');
  });

  // SIGKILL: the TCP connection closes at once, decided at the detector's timeout. SIGSTOP (a
  // node gone silent): the connection stays open, so the mirror counts as up until its last
  // frame is mirrorQuietMs (400 ms) old, and the decision comes at the later of the two.
  it.each(['SIGKILL', 'SIGSTOP'] as const)('(a) a real primary process, %s: the backup takes over within the bound + margin, after the hook', async (signal) => {
    const backup = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: H, port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(backup);
    const [pa0, pa1, pb0, pb1] = await freeUdpPorts();
    const child = spawn(process.execPath, [bundledScript(CHILD, 'test-'), path.join(scratch.root, 'p'), String(backup.port), KEY.toString('hex'), HB_KEY.toString('hex'), String(pa0), String(pa1), String(pb0), String(pb1), '300'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    open.push({ close: async () => { child.kill('SIGKILL'); await exited; } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const replayed: Buffer[] = [];
    let hookAt = 0;
    let promotedInHook: boolean | undefined;
    const w = await MirrorWatch.start({
      role: 'backup', node: 'node-b', peer: 'node-a', key: HB_KEY, intervalMs: INTERVAL, misses: MISSES, backup, mirrorQuietMs: 400,
      links: { main: { address: H, port: pb0 }, failsafe: { address: H, port: pb1 } },
      peerLinks: { main: { address: H, port: pa0 }, failsafe: { address: H, port: pa1 } },
      takeover: { key: KEY, node: 'node-b', log: 'orders', replay: (_l, p) => replayed.push(Buffer.from(p)) },
      beforeTakeover: async () => {
        hookAt = clock();
        promotedInHook = backup.promoted;
      },
    });
    open.push(w);
    const done = new Promise<WatchTakeover>((resolve, reject) => {
      w.once('takeover', resolve);
      w.once('takeover-failed', reject);
    });
    await until(() => out.includes('appended 300') && w.decision?.verdict === 'normal' && backup.heldLsn === 300, 15000, () => `child: ${out} verdict ${w.decision?.verdict}`);
    const killedAt = clock();
    child.kill(signal);
    const t = await done;
    open.push(t.result.log);
    const detect = t.decidedAt - killedAt;
    console.log(`${signal} -> primary-failure decided ${detect.toFixed(0)} ms (timeout ${w.timeoutMs} ms, mirrorQuietMs 400), takeover done +${(t.doneAt - t.decidedAt).toFixed(0)} ms`);
    const bound = signal === 'SIGKILL' ? w.timeoutMs : Math.max(w.timeoutMs, 400);
    expect(detect).toBeLessThan(bound + 250);
    expect(t.decidedAt - t.lastHeardAt!).toBeGreaterThanOrEqual(w.timeoutMs - 1);
    if (signal === 'SIGSTOP') expect(detect).toBeGreaterThanOrEqual(400 - 200); // not before the mirror went quiet (its last frame up to a keepalive, ~133 ms, before the stop)
    expect(promotedInHook).toBe(false);
    expect(hookAt).toBeGreaterThanOrEqual(t.decidedAt);
    expect(t.doneAt).toBeGreaterThanOrEqual(hookAt);
    expect(t.result.log.state).toBe('backup-only');
    expect(replayed.length).toBe(300);
    expect(replayed[299]!.toString()).toBe('record 299');
  });

  it('(b) only the mirror link cut, heartbeats on both links: link failure, no takeover; the primary primary-only, the backup flushed and waits', async () => {
    const p = await pair(100);
    const flushes = p.backup.stats.linkLossFlushes;
    p.proxy.cut();
    await until(() => p.backupWatch.decision?.verdict === 'link-failure' && p.log.state === 'primary-only', 2000, () => `verdict ${p.backupWatch.decision?.verdict}, log ${p.log.state}`);
    expect(p.backupWatch.decision!.lost).toEqual(['mirror']);
    expect(p.backupWatch.decision!.reachedBy).toEqual(['main', 'failsafe']);
    // Well past the detector's timeout: still no takeover.
    await sleep(3 * p.backupWatch.timeoutMs);
    expect(p.takeovers).toHaveLength(0);
    expect(p.hookCalls).toHaveLength(0);
    expect(p.backup.promoted).toBe(false);
    expect(p.backupWatch.decision!.verdict).toBe('link-failure');
    expect(p.backup.stats.linkLossFlushes).toBe(flushes + 1);
    expect(p.backup.durableLsn).toBe(100); // flushed what it held
    // The primary carries on, primary-only (each commit durable here), and reports the mirror lost.
    expect(await p.log.append(record(100))).toBe(100);
    expect(p.primaryWatch.report).toMatchObject({ backupUp: true, main: true, failsafe: true, mirror: 'primary-only' });
    // The link back: caught up, normal again on both sides.
    p.proxy.up();
    await until(() => p.log.state === 'normal' && p.backupWatch.decision?.verdict === 'normal', 5000, () => `log ${p.log.state}, verdict ${p.backupWatch.decision?.verdict}`);
    expect(p.takeovers).toHaveLength(0);
  });

  it('a link failure, then the primary dies: the backup may lack what it acknowledged alone, so no automatic takeover', async () => {
    const p = await pair(20);
    p.proxy.cut();
    await until(() => p.backupWatch.decision?.verdict === 'link-failure' && p.log.state === 'primary-only', 2000, () => `verdict ${p.backupWatch.decision?.verdict}`);
    // Acknowledged on the primary's disk only: the backup never sees these.
    for (let i = 20; i < 30; i++) expect(await p.log.append(record(i))).toBe(i);
    await sleep(2 * INTERVAL); // heartbeats heard after the mirror went down
    p.primaryWatch.close();
    await until(() => p.backupWatch.decision?.verdict === 'primary-failure', 2000, () => `verdict ${p.backupWatch.decision?.verdict}`);
    expect(p.backupWatch.decision!.takeOver).toBe(false);
    expect(p.backupWatch.decision!.why).toMatch(/operator decides/);
    await sleep(2 * INTERVAL);
    expect(p.takeovers).toHaveLength(0);
    expect(p.hookCalls).toHaveLength(0);
    expect(p.backup.promoted).toBe(false);
    expect(p.backup.heldLsn).toBe(20);
  });

  it('(c) one heartbeat link lost: normal goes on, the lost link reported on both sides; back when it returns', async () => {
    const p = await pair(20);
    p.main.down = true;
    await until(() => p.backupWatch.decision?.verdict === 'one-link-lost', 2000, () => `verdict ${p.backupWatch.decision?.verdict}`);
    expect(p.backupWatch.decision!.lost).toEqual(['main']);
    await until(() => p.primaryWatch.report?.main === false, 2000, 'primary sees main lost');
    expect(p.primaryWatch.report).toMatchObject({ backupUp: true, main: false, failsafe: true, mirror: 'normal' });
    await sleep(3 * p.backupWatch.timeoutMs);
    for (let i = 20; i < 40; i++) expect(await p.log.append(record(i))).toBe(i);
    expect(p.log.state).toBe('normal');
    expect(p.takeovers).toHaveLength(0);
    // Then the failsafe alone carries the heartbeats; losing the main and the mirror is a link failure, still no takeover.
    p.proxy.cut();
    await until(() => p.backupWatch.decision?.verdict === 'link-failure', 2000, () => `verdict ${p.backupWatch.decision?.verdict}`);
    expect(p.backupWatch.decision!.reachedBy).toEqual(['failsafe']);
    await sleep(2 * p.backupWatch.timeoutMs);
    expect(p.takeovers).toHaveLength(0);
    p.proxy.up();
    p.main.down = false;
    await until(() => p.backupWatch.decision?.verdict === 'normal' && p.primaryWatch.report?.main === true, 5000, () => `verdict ${p.backupWatch.decision?.verdict}`);
  });

  it('every watched path silent: the third path decides (answered: link failure, no takeover; silent: primary failure)', async () => {
    let alive = true;
    let asked = 0;
    const p = await pair(10, {
      thirdPath: async () => {
        asked++;
        return alive;
      },
    });
    // The primary cut off on both heartbeat links and the mirror, but still answering elsewhere.
    p.main.down = true;
    p.failsafe.down = true;
    p.proxy.cut();
    await until(() => p.backupWatch.decision?.verdict === 'link-failure' && p.backupWatch.decision.reachedBy.includes('third-path'), 3000, () => `verdict ${p.backupWatch.decision?.verdict}`);
    await sleep(2 * p.backupWatch.timeoutMs);
    expect(p.takeovers).toHaveLength(0);
    expect(p.hookCalls).toHaveLength(0);
    // Asked at most about once per interval.
    expect(asked).toBeLessThanOrEqual(Math.ceil((3 * p.backupWatch.timeoutMs) / INTERVAL) + 2);
    alive = false;
    await until(() => p.takeovers.length === 1, 3000, () => `takeover: verdict ${p.backupWatch.decision?.verdict}`);
    expect(p.backupWatch.decision!.lost).toContain('third-path');
    expect(p.hookCalls).toHaveLength(1);
  });

  it('(d) a takeover without a hook and without the unsafe flag is refused with EMIRRORUNFENCED; nothing changed', async () => {
    const backup = await MirrorBackup.listen({ dir: path.join(scratch.root, 'b'), host: H, port: 0, key: KEY, node: 'node-b', log: 'orders' });
    open.push(backup);
    const [a, b, c, d] = await freeUdpPorts();
    const opts: MirrorWatchOptions = {
      role: 'backup', node: 'node-b', peer: 'node-a', key: HB_KEY, backup,
      links: { main: { address: H, port: a }, failsafe: { address: H, port: b } },
      peerLinks: { main: { address: H, port: c }, failsafe: { address: H, port: d } },
      takeover: { key: KEY, node: 'node-b', log: 'orders', replay: () => {} },
    };
    const err = await MirrorWatch.start(opts).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(MirrorError);
    expect((err as MirrorError).code).toBe('EMIRRORUNFENCED');
    expect((err as Error).message).toMatch(/two primaries/);
    const err2 = await takeOverFenced(backup, { key: KEY, node: 'node-b', log: 'orders', replay: () => {} }).then(() => null, (e: unknown) => e);
    expect((err2 as MirrorError).code).toBe('EMIRRORUNFENCED');
    expect(backup.promoted).toBe(false);
    // unsafeWithoutFencing: false is not the flag
    expect((await MirrorWatch.start({ ...opts, unsafeWithoutFencing: false }).then(() => null, (e: unknown) => e) as MirrorError).code).toBe('EMIRRORUNFENCED');
    // A watch that only reports (no takeover options) needs neither; a primary never heard is never taken over from.
    const w = await MirrorWatch.start({ ...opts, takeover: undefined as never });
    open.push(w);
    await sleep(2 * w.timeoutMs);
    expect(w.decision?.verdict).toBe('not-heard-yet');
  });

  it('a fencing hook that fails stops the takeover: nothing changed on the backup, reported, not retried', async () => {
    const p = await pair(10, { beforeTakeover: () => Promise.reject(new Error('fence failed: device unreachable')) });
    const failed: unknown[] = [];
    p.backupWatch.on('takeover-failed', (e) => failed.push(e));
    p.primaryWatch.close();
    p.proxy.cut();
    await until(() => failed.length === 1, 3000, 'takeover-failed');
    expect((failed[0] as Error).message).toMatch(/fence failed/);
    await sleep(3 * INTERVAL);
    expect(failed).toHaveLength(1);
    expect(p.takeovers).toHaveLength(0);
    expect(p.backup.promoted).toBe(false);
  });
});
