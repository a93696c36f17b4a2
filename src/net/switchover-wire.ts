// The frames of a planned switchover (issue 12, `takeover switchover`): the backup B that takes a
// service over asks the primary P's agent, over one TCP connection to P's connection-stream
// listener, to lock the service's connections, dump them exactly (TCP_REPAIR) and hand the states
// over, then to give the address up once B is ready for it. Pure: encoding and a streaming
// decoder, no I/O (agent/switchover-primary.ts is P's end, agent/switchover-backup.ts B's).
//
// As the segment stream (segment-wire.ts; what both share is src/wire/signed-frames.ts): frames
// length-prefixed and authenticated with HMAC-SHA256 under the cluster key; the MAC covers a
// random nonce from each end and a sequence number per direction, so a frame recorded on one
// connection is refused on any other and a frame replayed, dropped or reordered is refused too.
// P locks nothing before B's GO, which covers P's fresh nonce: a recorded REQUEST replayed by
// someone else gets a CHALLENGE and nothing more. Not encrypted: the states carry the clients'
// unacknowledged bytes in clear (run it on a trusted link).
//
// Layout (big endian):
//    0  4  frame length: the bytes after this field, MAC included (u32)
//    4  4  magic "TKSW"
//    8  1  version 1
//    9  1  type (below)
//   10  8  B's nonce for this connection (u64, random, not 0)
//   18  8  P's nonce for this connection (u64, random, not 0; 0 in REQUEST)
//   26  8  sequence (u64): 0 for each direction's first frame, then +1 per frame
//   34  .. body
//  end-32  HMAC-SHA256 of every byte before it
// Bodies (text: u8 length + UTF-8):
//   1 REQUEST   (B -> P, first) B's node (text 1..64) | address (text 2..45) | port (u16 1..)
//               | quietWaitMs (u32: how long P may wait for its server to go quiet)
//               | barrier (u8: 0 none, 1 a RESP PING answered by the server once it is quiet,
//                 2 every PostgreSQL backend of the locked connections idle, replies let out)
//   2 CHALLENGE (P -> B, first) P's node (text 1..64)
//   3 GO        (B -> P) empty: lock and dump now
//   4 STATES    (P -> B) count (u16, 1..) | count x (u32 length | a TcpRepairState as JSON,
//               tcp-repair-state.ts's wire form, at most MAX_STATE_JSON_BYTES)
//   5 DUMPED    (P -> B) connections (u32) | quietMs (u32: lock to quiet) | dumpMs (u32)
//               | lockedAtMs (f64: when the lock was in place, ms since the epoch, P's clock)
//   6 REFUSED   (P -> B) reason (text 0..200): nothing was changed (or all was undone)
//   7 RELEASE   (B -> P) empty: B is ready, remove the address
//   8 RELEASED  (P -> B) empty: the address is gone from P
//   9 ABORT     (B -> P) reason (text 0..200): leave repair mode, unlock
//  10 DONE      (B -> P) moved (u32) | reset (u32)
//  11 UNLOCKED  (P -> B) lockHeldMs (u32) | releasedAfterMs (u32: from the lock to the address removed)
//  12 QUIET     (P -> B, before the first STATES) quietMs (u32): locked and quiet, the dump begins:
//               B may look at the server (catch-up, sessions) while the states come
import { BodyError, type BodyReader } from '../wire/body-reader.js';
import { checkWireKey, fitText, FrameFormat, MAC_BYTES, sequenceRefusal, SignedFrameReader, type WireReadResult, type WireRejection } from '../wire/signed-frames.js';
import { parseTcpRepairState, serializeTcpRepairState, type TcpRepairState } from './tcp-repair-state.js';

export const SWITCHOVER_MAGIC = Buffer.from('TKSW', 'ascii');
export const SWITCHOVER_WIRE_VERSION = 1;
export const SWITCHOVER_HEADER_BYTES = 34;
export const MIN_SWITCHOVER_KEY_BYTES = 16;
const MAX_NODE_BYTES = 64;
const MAX_REASON_BYTES = 200;
/** The largest state one connection may carry (its JSON, queues in base64), bytes. */
export const MAX_STATE_JSON_BYTES = 16 * 1024 * 1024;
/** The largest frame a reader accepts, bytes (one state at its largest, and room). */
export const MAX_SWITCHOVER_FRAME_BYTES = MAX_STATE_JSON_BYTES + 64 * 1024;
/**
 * A STATES frame is closed once its body passes this many bytes (then a new frame): ~250 idle
 * connections, each side's loop busy ~25 ms per frame (JSON, base64, HMAC; the check of each state).
 */
export const STATES_FRAME_BODY_BYTES = 256 * 1024;

/**
 * What proves the server finished what it read, once its queues are still: 'resp-ping', a PING
 * on a connection of the primary's own (over loopback) answered after every earlier request's
 * reply was written (Redis handles its clients in turns of one loop, and writes a turn's replies
 * before the next turn reads); 'pg-idle', every PostgreSQL backend holding a locked connection
 * shows itself waiting for its client (its process title: `idle`, `idle in transaction`), and
 * the lock drops only what comes in, so the replies go out and the backup's shadow sees them
 * (its sessions come from there: PostgreSQL shows no session's settings to another), with the
 * clients' pure ACKs let in until the barrier holds (a large reply drains); 'none',
 * the queues alone.
 */
export type SwitchoverBarrier = 'none' | 'resp-ping' | 'pg-idle';
const BARRIERS: readonly SwitchoverBarrier[] = ['none', 'resp-ping', 'pg-idle'];

export type SwitchoverMessageType = 'request' | 'challenge' | 'go' | 'states' | 'dumped' | 'refused' | 'release' | 'released' | 'abort' | 'done' | 'unlocked' | 'quiet';
const CODES: Record<SwitchoverMessageType, number> = { request: 1, challenge: 2, go: 3, states: 4, dumped: 5, refused: 6, release: 7, released: 8, abort: 9, done: 10, unlocked: 11, quiet: 12 };
const FORMAT = new FrameFormat<SwitchoverMessageType>('switchover', SWITCHOVER_MAGIC, SWITCHOVER_WIRE_VERSION, CODES, SWITCHOVER_HEADER_BYTES);
/** Who may send each message. */
const FROM_BACKUP: ReadonlySet<SwitchoverMessageType> = new Set(['request', 'go', 'release', 'abort', 'done']);

export type SwitchoverMessage =
  | { type: 'request'; node: string; address: string; port: number; quietWaitMs: number; barrier: SwitchoverBarrier }
  | { type: 'challenge'; node: string }
  | { type: 'go' }
  | { type: 'states'; states: TcpRepairState[] }
  | { type: 'dumped'; connections: number; quietMs: number; dumpMs: number; lockedAtMs: number }
  | { type: 'refused'; reason: string }
  | { type: 'release' }
  | { type: 'released' }
  | { type: 'abort'; reason: string }
  | { type: 'done'; moved: number; reset: number }
  | { type: 'unlocked'; lockHeldMs: number; releasedAfterMs: number }
  | { type: 'quiet'; quietMs: number };

export interface SwitchoverFrame {
  backupNonce: bigint;
  /** 0 in REQUEST. */
  primaryNonce: bigint;
  seq: bigint;
  message: SwitchoverMessage;
}

/** Throws TypeError/RangeError unless `key` is a Buffer of at least 16 bytes. */
export function checkSwitchoverKey(key: Buffer): void {
  checkWireKey(key, "the switchover's key", MIN_SWITCHOVER_KEY_BYTES);
}

/** True when `head` (at least 8 bytes) starts a switchover frame: its magic at bytes 4..7. */
export function isSwitchoverFrameStart(head: Buffer): boolean {
  return head.length >= 8 && head.subarray(4, 8).equals(SWITCHOVER_MAGIC);
}

// ---- encoding ----

function text(what: string, s: string, min: number, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length < min || b.length > max) throw new RangeError(`${what} must be ${min}..${max} bytes: ${JSON.stringify(s.slice(0, 40))}`);
  return Buffer.concat([Buffer.of(b.length), b]);
}

function u16(what: string, v: number, min = 0): Buffer {
  if (!Number.isInteger(v) || v < min || v > 0xffff) throw new RangeError(`${what} ${v} is not an integer in ${min}..65535`);
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

function u32(what: string, v: number): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${what} ${v} is not an integer in 0..2^32-1`);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

function f64(what: string, v: number): Buffer {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what} ${v} is not a time (ms since the epoch)`);
  const b = Buffer.alloc(8);
  b.writeDoubleBE(v);
  return b;
}

function readTime(r: BodyReader, what: string): number {
  const v = r.bytes(8, what).readDoubleBE(0);
  if (!Number.isFinite(v) || v < 0) throw new BodyError(`${what} ${v} is not a time`);
  return v;
}

/** A state's JSON bytes; throws RangeError when it is above MAX_STATE_JSON_BYTES. */
export function stateJson(state: TcpRepairState): Buffer {
  const b = Buffer.from(JSON.stringify(serializeTcpRepairState(state)), 'utf8');
  if (b.length > MAX_STATE_JSON_BYTES) throw new RangeError(`a connection's state of ${b.length} bytes is above the ${MAX_STATE_JSON_BYTES} a switchover carries`);
  return b;
}

function bodyOf(m: SwitchoverMessage): Buffer {
  switch (m.type) {
    case 'request':
      if (!BARRIERS.includes(m.barrier)) throw new RangeError(`barrier ${String(m.barrier)} is not one of ${BARRIERS.join(', ')}`);
      return Buffer.concat([text('node', m.node, 1, MAX_NODE_BYTES), text('address', m.address, 2, 45), u16('port', m.port, 1), u32('quietWaitMs', m.quietWaitMs), Buffer.of(BARRIERS.indexOf(m.barrier))]);
    case 'challenge':
      return text('node', m.node, 1, MAX_NODE_BYTES);
    case 'states': {
      const parts = [u16('state count', m.states.length, 1)];
      for (const s of m.states) {
        const j = stateJson(s);
        parts.push(u32('state length', j.length), j);
      }
      return Buffer.concat(parts);
    }
    case 'dumped':
      return Buffer.concat([u32('connections', m.connections), u32('quietMs', m.quietMs), u32('dumpMs', m.dumpMs), f64('lockedAtMs', m.lockedAtMs)]);
    case 'refused':
    case 'abort':
      return Buffer.concat([Buffer.of(fitText(m.reason, MAX_REASON_BYTES).length), fitText(m.reason, MAX_REASON_BYTES)]);
    case 'done':
      return Buffer.concat([u32('moved', m.moved), u32('reset', m.reset)]);
    case 'unlocked':
      return Buffer.concat([u32('lockHeldMs', m.lockHeldMs), u32('releasedAfterMs', m.releasedAfterMs)]);
    case 'quiet':
      return u32('quietMs', m.quietMs);
    case 'go':
    case 'release':
    case 'released':
      return Buffer.alloc(0);
  }
}

/**
 * One whole frame. Throws RangeError on a field out of range (a node name too long, a port 0, a
 * state above MAX_STATE_JSON_BYTES) and TypeError/RangeError on a bad key.
 */
export function encodeSwitchoverFrame(frame: SwitchoverFrame, key: Buffer): Buffer {
  checkSwitchoverKey(key);
  const body = bodyOf(frame.message);
  const b = FORMAT.alloc(body.length);
  b.writeBigUInt64BE(frame.backupNonce, 10);
  b.writeBigUInt64BE(frame.primaryNonce, 18);
  b.writeBigUInt64BE(frame.seq, 26);
  body.copy(b, SWITCHOVER_HEADER_BYTES);
  return FORMAT.seal(b, frame.message.type, key);
}

/**
 * The states packed into STATES messages of about STATES_FRAME_BODY_BYTES each (a state larger
 * than that gets a message of its own), in order.
 */
export function packStates(states: readonly TcpRepairState[], maxBodyBytes = STATES_FRAME_BODY_BYTES): TcpRepairState[][] {
  const out: TcpRepairState[][] = [];
  let cur: TcpRepairState[] = [];
  let bytes = 0;
  for (const s of states) {
    // An estimate from the queues (base64 is 4/3 of them, plus ~600 bytes of fields).
    const size = Math.ceil(((s.send.queue.length + s.recv.queue.length) * 4) / 3) + 600;
    if (cur.length > 0 && (bytes + size > maxBodyBytes || cur.length === 0xffff)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(s);
    bytes += size;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

// ---- decoding ----

function readMessage(type: SwitchoverMessageType, r: BodyReader): SwitchoverMessage {
  switch (type) {
    case 'request': {
      const node = r.text('node', 1, MAX_NODE_BYTES);
      const address = r.text('address', 2, 45);
      const port = r.u16('port');
      if (port === 0) throw new BodyError('port 0');
      const quietWaitMs = r.u32('quietWaitMs');
      const barrier = BARRIERS[r.u8('barrier')];
      if (!barrier) throw new BodyError('unknown barrier');
      return { type, node, address, port, quietWaitMs, barrier };
    }
    case 'challenge':
      return { type, node: r.text('node', 1, MAX_NODE_BYTES) };
    case 'states': {
      const count = r.u16('state count');
      if (count === 0) throw new BodyError('STATES with no state');
      const states: TcpRepairState[] = [];
      for (let i = 0; i < count; i++) {
        const bytes = r.lengthPrefixed('state', MAX_STATE_JSON_BYTES);
        let json: unknown;
        try {
          json = JSON.parse(bytes.toString('utf8'));
        } catch {
          throw new BodyError(`state ${i} is not JSON`);
        }
        try {
          states.push(parseTcpRepairState(json));
        } catch (err) {
          throw new BodyError(`state ${i}: ${(err as Error).message}`);
        }
      }
      return { type, states };
    }
    case 'dumped':
      return { type, connections: r.u32('connections'), quietMs: r.u32('quietMs'), dumpMs: r.u32('dumpMs'), lockedAtMs: readTime(r, 'lockedAtMs') };
    case 'refused':
    case 'abort':
      return { type, reason: r.text('reason', 0, MAX_REASON_BYTES) };
    case 'done':
      return { type, moved: r.u32('moved'), reset: r.u32('reset') };
    case 'unlocked':
      return { type, lockHeldMs: r.u32('lockHeldMs'), releasedAfterMs: r.u32('releasedAfterMs') };
    case 'quiet':
      return { type, quietMs: r.u32('quietMs') };
    case 'go':
    case 'release':
    case 'released':
      return { type };
  }
}

/** Decodes one whole frame (its MAC, its body); never throws on bad input. */
export function decodeSwitchoverFrame(buf: Buffer, key: Buffer): WireReadResult<SwitchoverFrame> {
  return FORMAT.decode(buf, key, (type, r) => {
    const backupNonce = buf.readBigUInt64BE(10);
    const primaryNonce = buf.readBigUInt64BE(18);
    const seq = buf.readBigUInt64BE(26);
    return { backupNonce, primaryNonce, seq, message: readMessage(type, r) };
  });
}

/**
 * The streaming reader of one end. `role` is the reading end: 'primary' reads B's frames (the
 * first a REQUEST with P's nonce 0, then frames carrying both nonces, P's being the one it
 * chose: `primaryNonce`), 'backup' reads P's (the first a CHALLENGE carrying B's nonce; P's
 * nonce is learnt from it). A frame from the wrong side, another session's nonces, or a
 * sequence number out of order ends the stream with the reason.
 */
export class SwitchoverFrameReader extends SignedFrameReader<SwitchoverFrame> {
  private backupNonce: bigint;
  private primaryNonce: bigint;

  constructor(
    private readonly role: 'primary' | 'backup',
    private readonly key: Buffer,
    session: { backupNonce?: bigint; primaryNonce?: bigint } = {},
  ) {
    checkSwitchoverKey(key);
    super(FORMAT, MAX_SWITCHOVER_FRAME_BYTES);
    this.backupNonce = session.backupNonce ?? 0n;
    this.primaryNonce = session.primaryNonce ?? 0n;
  }

  /** The session's nonces as known so far (0: not yet). */
  get session(): { backupNonce: bigint; primaryNonce: bigint } {
    return { backupNonce: this.backupNonce, primaryNonce: this.primaryNonce };
  }

  protected decode(buf: Buffer): WireReadResult<SwitchoverFrame> {
    return decodeSwitchoverFrame(buf, this.key);
  }

  protected checkOrder(f: SwitchoverFrame): { reason: WireRejection; detail: string } | null {
    const t = f.message.type;
    const fromBackup = FROM_BACKUP.has(t);
    if (fromBackup !== (this.role === 'primary')) return { reason: 'unexpected', detail: `${t} may not come from the ${this.role === 'primary' ? 'backup' : 'primary'}` };
    if (f.seq !== this.expectedSeq) return sequenceRefusal(t, f.seq, this.expectedSeq);
    if (this.expectedSeq === 0n) {
      if (this.role === 'primary') {
        if (t !== 'request') return { reason: 'unexpected', detail: `${t} before REQUEST` };
        if (f.primaryNonce !== 0n || f.backupNonce === 0n) return { reason: 'session', detail: 'REQUEST with a primary nonce, or without its own' };
        this.backupNonce = f.backupNonce;
        return null;
      }
      // The primary answers a REQUEST it refuses (not a peer, the address not there, ...) with
      // REFUSED instead of its CHALLENGE: the reason must reach the operator.
      if (t !== 'challenge' && t !== 'refused') return { reason: 'unexpected', detail: `${t} before CHALLENGE` };
      if (f.backupNonce !== this.backupNonce || f.primaryNonce === 0n) return { reason: 'session', detail: `${t.toUpperCase()} for another request` };
      this.primaryNonce = f.primaryNonce;
      return null;
    }
    if (t === 'request' || t === 'challenge') return { reason: 'unexpected', detail: `a second ${t}` };
    if (f.backupNonce !== this.backupNonce || f.primaryNonce !== this.primaryNonce) return { reason: 'session', detail: `${t} with the nonces of another connection` };
    return null;
  }
}

/** One end's writer: numbers its frames and puts the session's nonces on them. */
export class SwitchoverFrameWriter {
  private seq = 0n;

  constructor(
    private readonly key: Buffer,
    readonly backupNonce: bigint,
    public primaryNonce: bigint,
  ) {
    checkSwitchoverKey(key);
  }

  frame(message: SwitchoverMessage): Buffer {
    return encodeSwitchoverFrame({ backupNonce: this.backupNonce, primaryNonce: message.type === 'request' ? 0n : this.primaryNonce, seq: this.seq++, message }, this.key);
  }
}

/** Bytes of the smallest frame (an empty body). */
export const MIN_SWITCHOVER_FRAME_BYTES = SWITCHOVER_HEADER_BYTES + MAC_BYTES;
