// Helpers for the log mirror's tests: a seeded random source, valid frame streams and their
// seeded mutations, small waits.
import net from 'node:net';
import { encodeMirrorFrame, type MirrorEnvelope, type MirrorMessage } from '../../src/log/mirror-wire.js';
import { chainOver } from '../../src/log/log-chain.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';

/** mulberry32: a seeded source of numbers in [0, 1), the same for a seed on every run. */
export function seededRandom(seed: number): { rnd: () => number; int: (k: number) => number } {
  let s = seed | 0;
  const rnd = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { rnd, int: (k: number) => Math.floor(rnd() * k) };
}

export const KEY = Buffer.from('mirror-test-key-0123456789abcdef');
export const OTHER_KEY = Buffer.from('another-key-of-32-bytes-........');

export const PRIMARY_INC = 0x1111n;
export const BACKUP_INC = 0x2222n;
export const BACKUP_NONCE = 0xb0b0b0b0n;
export const PRIMARY_NONCE = 0xa1a1a1a1n;

/** The envelope of frame `seq` of one direction of a connection between the two incarnations above. */
export function envelope(from: 'primary' | 'backup', seq: bigint, session: { backupNonce?: bigint; primaryNonce?: bigint; backupIncarnation?: bigint } = {}): MirrorEnvelope {
  const b = session.backupIncarnation ?? BACKUP_INC;
  const hello = from === 'backup' && seq === 0n;
  return {
    senderIncarnation: from === 'primary' ? PRIMARY_INC : b,
    receiverIncarnation: from === 'primary' ? b : hello ? 0n : PRIMARY_INC,
    backupNonce: session.backupNonce ?? BACKUP_NONCE,
    primaryNonce: hello ? 0n : (session.primaryNonce ?? PRIMARY_NONCE),
    seq,
  };
}

export const frame = (from: 'primary' | 'backup', seq: bigint, message: MirrorMessage, key = KEY, session = {}) =>
  encodeMirrorFrame({ ...envelope(from, seq, session), message }, key);

export const record = (lsn: number, size = 24) => Buffer.from(`record ${lsn} `.padEnd(size, String.fromCharCode(97 + (lsn % 26))).slice(0, size));

/** The primary's side of a connection: START from `fromLsn`, then RECORDS frames of `perFrame` records each. */
export function primaryStream(fromLsn: number, frames: number, perFrame: number, session: { backupNonce?: bigint; backupIncarnation?: bigint } = {}, key = KEY): Buffer[] {
  const below = Array.from({ length: fromLsn }, (_, lsn) => record(lsn, 8 + (lsn % 40)));
  const out = [frame('primary', 0n, { type: 'start', node: 'p', fromLsn, prevCrc: chainOver(below), refusal: null, reason: '' }, key, session)];
  let lsn = fromLsn;
  for (let i = 1; i <= frames; i++) {
    const records = Array.from({ length: perFrame }, (_, k) => record(lsn + k, 8 + ((lsn + k) % 40)));
    out.push(frame('primary', BigInt(i), { type: 'records', firstLsn: lsn, records }, key, session));
    lsn += perFrame;
  }
  return out;
}

/**
 * One seeded mutation of a stream of frames: bits flipped, bytes overwritten, a cut, garbage
 * appended or put in front, a frame dropped, doubled, or two swapped, a length field changed.
 * Returns the bytes and a name for the mutation.
 */
export function mutateStream(frames: Buffer[], int: (k: number) => number): { bytes: Buffer; how: string } {
  const fs = frames.map((f) => Buffer.from(f));
  const joined = () => Buffer.concat(fs);
  switch (int(9)) {
    case 0: {
      const b = joined();
      for (let k = 1 + int(4); k > 0; k--) {
        const at = int(b.length);
        b[at] = b[at]! ^ (1 << int(8));
      }
      return { bytes: b, how: 'bit flips' };
    }
    case 1: {
      const b = joined();
      const at = int(b.length);
      for (let p = at, k = 1 + int(32); k > 0 && p < b.length; k--, p++) b[p] = (b[p]! + 1 + int(255)) & 0xff;
      return { bytes: b, how: 'bytes overwritten' };
    }
    case 2: {
      // Inside a frame, never at a boundary (a stream cut between frames is a valid shorter one).
      const b = joined();
      let at = 1 + int(b.length - 1);
      let edge = 0;
      for (const f of fs) if ((edge += f.length) === at) at--;
      return { bytes: b.subarray(0, at), how: 'cut' };
    }
    case 3:
      return { bytes: Buffer.concat([joined(), Buffer.from(Array.from({ length: 1 + int(200) }, () => int(256)))]), how: 'garbage after' };
    case 4:
      return { bytes: Buffer.concat([Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256))), joined()]), how: 'garbage before' };
    case 5: {
      // Not the last (without it the stream is a valid shorter one).
      fs.splice(int(fs.length - 1), 1);
      return { bytes: joined(), how: 'frame dropped' };
    }
    case 6: {
      const i = int(fs.length);
      fs.splice(i, 0, fs[i]!);
      return { bytes: joined(), how: 'frame replayed' };
    }
    case 7: {
      if (fs.length < 2) return { bytes: joined().subarray(1), how: 'first byte dropped' };
      const i = int(fs.length - 1);
      [fs[i], fs[i + 1]] = [fs[i + 1]!, fs[i]!];
      return { bytes: joined(), how: 'frames swapped' };
    }
    default: {
      const f = fs[int(fs.length)]!;
      const delta = [-1, 1, -4, 4, 1000, -1000, 0x1000000][int(7)]!;
      f.writeUInt32BE(Math.max(0, Math.min(0xffffffff, f.readUInt32BE(0) + delta)), 0);
      return { bytes: joined(), how: `length ${delta > 0 ? '+' : ''}${delta}` };
    }
  }
}

/** What a test of the mirror opened: closed after it, newest first. */
export interface Closable {
  close(): Promise<void> | void;
}

/**
 * Per test of the calling file: a fresh directory (`root`), things to close (`open`) and child
 * processes to SIGKILL (`children`); after each test the children are killed, the rest closed
 * newest first, the directory removed. Call once at the top of a test file.
 */
export function perTestScratch(prefix: string): { root: string; open: Closable[]; children: ChildProcess[] } {
  const scratch = { root: '', open: [] as Closable[], children: [] as ChildProcess[] };
  beforeEach(() => {
    scratch.root = mkdtempSync(path.join(tmpdir(), prefix));
  });
  afterEach(async () => {
    for (const c of scratch.children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const o of scratch.open.splice(0).reverse()) await Promise.resolve(o.close()).catch(() => {});
    rmSync(scratch.root, { recursive: true, force: true });
  });
  return scratch;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 5 ms until it holds; throws after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string | (() => string) = 'condition'): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(5);
  }
}


/**
 * A TCP proxy standing for the replication link between primary and backup: it can hold the
 * bytes going to the backup (the backup stops reading), go silent both ways without closing
 * (a link that hangs), cut every connection (the link breaks), and refuse new ones while down.
 */
export class LinkProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  private down = false;
  private held = false;
  private silent = false;

  private constructor(private readonly target: number) {
    this.server = net.createServer((a) => this.accept(a));
  }

  static async start(targetPort: number): Promise<LinkProxy> {
    const p = new LinkProxy(targetPort);
    await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', r));
    return p;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get connections(): number {
    return this.pairs.size;
  }

  private accept(a: net.Socket): void {
    if (this.down) {
      a.destroy();
      return;
    }
    const b = net.connect(this.target, '127.0.0.1');
    const pair = { a, b };
    this.pairs.add(pair);
    const end = () => {
      a.destroy();
      b.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [a, b]) {
      s.on('error', end);
      s.on('close', end);
    }
    a.on('data', (d: Buffer) => {
      if (this.silent) return;
      if (this.held) {
        (pair as { queued?: Buffer[] }).queued ??= [];
        (pair as { queued?: Buffer[] }).queued!.push(d);
        return;
      }
      b.write(d);
    });
    b.on('data', (d: Buffer) => {
      if (!this.silent) a.write(d);
    });
  }

  /** Bytes to the backup are held (as if it stopped reading); `release()` delivers them. */
  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
    for (const p of this.pairs) {
      const q = (p as { queued?: Buffer[] }).queued ?? [];
      (p as { queued?: Buffer[] }).queued = [];
      for (const d of q) p.b.write(d);
    }
  }

  /** Drops every byte both ways, connections left open (a link that hangs). */
  silence(on = true): void {
    this.silent = on;
  }

  /** Destroys every connection; while `down`, new ones are refused at once. */
  cut(down = true): void {
    this.down = down;
    for (const p of [...this.pairs]) {
      p.a.destroy();
      p.b.destroy();
    }
    this.pairs.clear();
  }

  up(): void {
    this.down = false;
    this.silent = false;
    this.held = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
