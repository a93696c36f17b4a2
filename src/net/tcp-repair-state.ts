// The state of one TCP connection as TCP_REPAIR dumps and restores it, typed; its wire form
// (JSON, queues in base64) for states that travel between agents; and the parser that checks a
// state before it can reach the kernel. Pure: no syscalls.
//
// Sources: the kernel's TCP_REPAIR handlers (net/ipv4/tcp.c: tcp_repair_set_window,
// tcp_repair_options_est), RFC 7323 (window scale 0..14, timestamps), RFC 2018 (SACK), CRIU's
// libsoccr (what a dump holds).
import net from 'node:net';
import { z } from 'zod';
import { firstIssue } from '../schema-fields.js';
import type { NativeRepairState } from '../native.js';
import { seqAdd } from './seq.js';

/** One end of the connection. scopeId: IPv6 interface index for a link-local address. */
export interface RepairEndpoint {
  address: string;
  port: number;
  scopeId?: number;
}

/**
 * One established connection, enough to rebuild it on another socket (on this or another host).
 * Sequence numbers are unsigned 32-bit values in sequence space (they wrap); windows are in
 * bytes, already scaled; the timestamp is the TSval clock in ms.
 */
export interface TcpRepairState {
  family: 4 | 6;
  local: RepairEndpoint;
  remote: RepairEndpoint;
  send: {
    /** SND.UNA: the sequence number of queue[0]. */
    seq: number;
    /** Bytes sent but not acknowledged, then bytes never sent (write_seq - SND.UNA in all). */
    queue: Buffer;
    /** How many trailing bytes of queue were never sent (0 <= unsent <= queue.length). */
    unsent: number;
  };
  recv: {
    /** Sequence number of queue[0]: the first byte the application has not read. RCV.NXT = seq + queue.length. */
    seq: number;
    /** Bytes acknowledged to the peer that the application had not read. */
    queue: Buffer;
  };
  /** The peer's MSS (the kernel's mss_clamp), bytes. */
  mss: number;
  /** Options negotiated in the handshake. windowScale null: not negotiated (RFC 7323 §2). */
  options: {
    sack: boolean;
    timestamps: boolean;
    /** send: the peer's shift (applied to windows it advertises); recv: ours. 0..14 each. */
    windowScale: { send: number; recv: number } | null;
  };
  /** TCP_TIMESTAMP: our TSval clock (ms, random per-connection offset included); 0 without timestamps. */
  timestamp: number;
  /** TCP_REPAIR_WINDOW (struct tcp_repair_window), bytes and sequence numbers. */
  window: { sndWl1: number; sndWnd: number; maxWindow: number; rcvWnd: number; rcvWup: number };
  /** SO_SNDBUF / SO_RCVBUF of the source (the kernel's doubled values), bytes; restore grows its buffers to fit the queues. */
  buffers: { send: number; recv: number };
}

/** Largest queue a state may carry (either direction); the addon has the same bound. */
export const MAX_QUEUE_BYTES = 64 * 1024 * 1024;
/** Version of the wire form below. */
export const TCP_REPAIR_STATE_VERSION = 1;

/** A state that failed validation: `field` names it (`send.unsent`, `window.rcvWup`, ...). */
export class TcpRepairStateError extends Error {
  readonly code = 'ERR_TCP_REPAIR_STATE';
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`invalid TCP repair state: ${field === '' ? '' : `${field}: `}${reason}`);
    this.name = 'TcpRepairStateError';
  }
}

const u32 = z.number().int().min(0).max(0xffffffff);
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64').refine((s) => s.length % 4 === 0, 'must be base64 (length a multiple of 4)');
const endpoint = z.strictObject({
  address: z.string().refine((s) => net.isIP(s) !== 0, 'must be an IPv4 or IPv6 address'),
  port: z.number().int().min(1).max(65535),
  scopeId: u32.optional(),
});

// The fields of both forms; only the queues differ (bytes here, base64 on the wire).
function stateShape<Q extends z.ZodType>(queue: Q) {
  return {
    family: z.union([z.literal(4), z.literal(6)]),
    local: endpoint,
    remote: endpoint,
    send: z.strictObject({ seq: u32, queue, unsent: u32 }),
    recv: z.strictObject({ seq: u32, queue }),
    // net.ipv4.tcp_min_snd_mss's default (48) .. the largest an MSS option can say.
    mss: z.number().int().min(48).max(65535),
    options: z.strictObject({
      sack: z.boolean(),
      timestamps: z.boolean(),
      // RFC 7323 §2.3: a shift above 14 is used as 14; the kernel refuses it (EFBIG).
      windowScale: z.strictObject({ send: z.number().int().min(0).max(14), recv: z.number().int().min(0).max(14) }).nullable(),
    }),
    timestamp: u32,
    window: z.strictObject({ sndWl1: u32, sndWnd: u32, maxWindow: u32, rcvWnd: u32, rcvWup: u32 }),
    buffers: z.strictObject({ send: z.number().int().min(0).max(0x7fffffff), recv: z.number().int().min(0).max(0x7fffffff) }),
  };
}

/** The wire form: JSON-safe, queues in base64, a version. */
export const tcpRepairStateWire = z.strictObject({ version: z.literal(TCP_REPAIR_STATE_VERSION), ...stateShape(base64) });
const tcpRepairStateTyped = z.strictObject(stateShape(z.instanceof(Buffer, { message: 'must be a Buffer' })));
export type TcpRepairStateWire = z.infer<typeof tcpRepairStateWire>;

/** a - b in sequence space, as a signed 32-bit distance (RFC 9293 serial arithmetic). */
function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/**
 * Checks a typed state (field ranges, then the rules between fields); throws
 * TcpRepairStateError naming the field. The window
 * rules are the kernel's own (tcp_repair_set_window: EINVAL otherwise), checked here so a bad
 * state is refused before a socket exists.
 */
/** RCV.NXT of a socket restored from `state`: past its receive queue (sequence space). */
export function restoredRcvNxt(state: TcpRepairState): number {
  return seqAdd(state.recv.seq, state.recv.queue.length);
}

export function checkTcpRepairState(s: TcpRepairState): void {
  const fail = (field: string, reason: string): never => {
    throw new TcpRepairStateError(field, reason);
  };
  const shape = tcpRepairStateTyped.safeParse(s);
  if (!shape.success) {
    const { field, message } = firstIssue(shape.error);
    fail(field, message);
  }
  const fam = (a: string) => (net.isIPv4(a) ? 4 : net.isIPv6(a) ? 6 : 0);
  if (fam(s.local.address) !== s.family) fail('local.address', `is not an IPv${s.family} address`);
  if (fam(s.remote.address) !== s.family) fail('remote.address', `is not an IPv${s.family} address`);
  if (s.send.queue.length > MAX_QUEUE_BYTES) fail('send.queue', `is longer than ${MAX_QUEUE_BYTES} bytes`);
  if (s.recv.queue.length > MAX_QUEUE_BYTES) fail('recv.queue', `is longer than ${MAX_QUEUE_BYTES} bytes`);
  if (s.send.unsent > s.send.queue.length) fail('send.unsent', `${s.send.unsent} exceeds the send queue (${s.send.queue.length} bytes)`);
  if (!s.options.timestamps && s.timestamp !== 0) fail('timestamp', 'must be 0 without the timestamps option');
  const w = s.window;
  const rcvNxt = (s.recv.seq + s.recv.queue.length) >>> 0;
  if (w.maxWindow < w.sndWnd) fail('window.maxWindow', `${w.maxWindow} is below sndWnd ${w.sndWnd}`);
  if (seqDiff(w.rcvWup, rcvNxt) > 0) fail('window.rcvWup', `${w.rcvWup} is after RCV.NXT ${rcvNxt}`);
  if (seqDiff(w.sndWl1, (rcvNxt + w.rcvWnd) >>> 0) > 0) fail('window.sndWl1', `${w.sndWl1} is after RCV.NXT + rcvWnd`);
  // A window larger than 2^30 cannot be advertised (65535 << 14) nor kept in sequence space.
  for (const k of ['sndWnd', 'maxWindow', 'rcvWnd'] as const) if (w[k] > 65535 * 2 ** 14) fail(`window.${k}`, `${w[k]} exceeds 65535 << 14`);
  if (s.local.scopeId !== undefined && s.family !== 6) fail('local.scopeId', 'is for IPv6 only');
  if (s.remote.scopeId !== undefined && s.family !== 6) fail('remote.scopeId', 'is for IPv6 only');
}

/**
 * Parses and checks a state in wire form (e.g. JSON.parse of what another agent sent).
 * Throws TcpRepairStateError naming the first bad field; the input is never modified.
 */
export function parseTcpRepairState(input: unknown): TcpRepairState {
  const r = tcpRepairStateWire.safeParse(input);
  if (!r.success) {
    const { field, message } = firstIssue(r.error);
    throw new TcpRepairStateError(field, message);
  }
  const w = r.data;
  const state: TcpRepairState = {
    family: w.family,
    local: { ...w.local },
    remote: { ...w.remote },
    send: { seq: w.send.seq, queue: Buffer.from(w.send.queue, 'base64'), unsent: w.send.unsent },
    recv: { seq: w.recv.seq, queue: Buffer.from(w.recv.queue, 'base64') },
    mss: w.mss,
    options: { sack: w.options.sack, timestamps: w.options.timestamps, windowScale: w.options.windowScale ? { ...w.options.windowScale } : null },
    timestamp: w.timestamp,
    window: { ...w.window },
    buffers: { ...w.buffers },
  };
  checkTcpRepairState(state);
  return state;
}

/** The wire form of a state (checked first: a bad state is never sent). */
export function serializeTcpRepairState(s: TcpRepairState): TcpRepairStateWire {
  checkTcpRepairState(s);
  const endpointOut = (e: RepairEndpoint) => ({ address: e.address, port: e.port, ...(e.scopeId !== undefined ? { scopeId: e.scopeId } : {}) });
  return {
    version: TCP_REPAIR_STATE_VERSION,
    family: s.family,
    local: endpointOut(s.local),
    remote: endpointOut(s.remote),
    send: { seq: s.send.seq, queue: s.send.queue.toString('base64'), unsent: s.send.unsent },
    recv: { seq: s.recv.seq, queue: s.recv.queue.toString('base64') },
    mss: s.mss,
    options: { sack: s.options.sack, timestamps: s.options.timestamps, windowScale: s.options.windowScale ? { ...s.options.windowScale } : null },
    timestamp: s.timestamp,
    window: { ...s.window },
    buffers: { ...s.buffers },
  };
}

/** The typed state from the addon's flat dump (no check: the kernel produced it). */
export function fromNative(n: NativeRepairState): TcpRepairState {
  const ep = (e: NativeRepairState['local']): RepairEndpoint => ({ address: e.address, port: e.port, ...(n.family === 6 && e.scopeId ? { scopeId: e.scopeId } : {}) });
  return {
    family: n.family,
    local: ep(n.local),
    remote: ep(n.remote),
    send: { seq: n.sendSeq, queue: Buffer.from(n.sendQueue), unsent: n.sendUnsent },
    recv: { seq: n.recvSeq, queue: Buffer.from(n.recvQueue) },
    mss: n.mss,
    options: { sack: n.sack, timestamps: n.timestamps, windowScale: n.wscale ? { send: n.sndWscale, recv: n.rcvWscale } : null },
    timestamp: n.timestamps ? n.timestamp : 0,
    window: { sndWl1: n.sndWl1, sndWnd: n.sndWnd, maxWindow: n.maxWindow, rcvWnd: n.rcvWnd, rcvWup: n.rcvWup },
    buffers: { send: n.sndbuf, recv: n.rcvbuf },
  };
}

/** The addon's flat shape of a (checked) state. */
export function toNative(s: TcpRepairState): NativeRepairState {
  return {
    family: s.family,
    local: { ...s.local },
    remote: { ...s.remote },
    sendSeq: s.send.seq,
    sendQueue: s.send.queue,
    sendUnsent: s.send.unsent,
    recvSeq: s.recv.seq,
    recvQueue: s.recv.queue,
    mss: s.mss,
    sack: s.options.sack,
    timestamps: s.options.timestamps,
    wscale: s.options.windowScale !== null,
    sndWscale: s.options.windowScale?.send ?? 0,
    rcvWscale: s.options.windowScale?.recv ?? 0,
    timestamp: s.timestamp,
    ...s.window,
    sndbuf: s.buffers.send,
    rcvbuf: s.buffers.recv,
  };
}
