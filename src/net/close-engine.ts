// The state machine that ends the connections of a dead remote side, one per connection, all in
// parallel. It only decides: segments go out through `io.send`, the peers' answers come in through
// `answer()`, and time through `io.now()` + `tick()`, so it is tested without privileges against a
// model of the peer's kernel, and driven for real by close-remote.ts.
//
// Kernel facts it relies on (RFC 5961 §3.2, RFC 9293 §3.10.7; Linux tcp_validate_incoming() in
// net/ipv4/tcp_input.c; each checked against the real kernel by test/lab/close-remote.test.ts):
// - a RST resets only when seq == RCV.NXT; a seq inside the window draws a challenge ACK carrying
//   RCV.NXT (ack) and SND.NXT (seq); an out-of-window segment draws a duplicate ACK with the same;
// - both answers are rate-limited per socket (net.ipv4.tcp_invalid_ratelimit: 500 ms by default,
//   Documentation/networking/ip-sysctl.rst);
// - a segment for a connection the peer no longer has draws a RST (RFC 9293 §3.10.7.1).
// - data beyond the peer's receive window is dropped, and a zero window takes none (RFC 9293
//   3.10.7.4; Linux answers each such segment with an ACK at once, showing the window). Linux
//   takes a bare FIN into a zero window; the RFC lets a receiver drop it.
import type { SegmentSpec } from '../native.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_URG } from '../native.js';
import type { CloseMethod } from './close-method.js';
import { methodName } from './close-method.js';
import type { CloseOutcome, CloseResult } from './close-result.js';
import { canonicalConnectionKey, canonicalizer, type Endpoint } from './endpoint.js';
import { seqAdd, seqDiff } from './seq.js';
import { SLICE_MS } from '../event-loop.js';

/** What the survivor knows of a connection from tracking it before the failure. */
export interface TrackedState {
  /** The dead side's SND.NXT as last seen on the wire. */
  deadNextSeq: number;
  /** The peer's SND.NXT as last seen. */
  peerNextSeq: number;
  /** The highest ack the peer sent (its RCV.NXT when it last acked). */
  peerAck: number;
  /** Raw window field the dead side last sent. */
  deadWindow?: number;
  /**
   * The peer's receive window as it last advertised it, bytes (its window field scaled by its
   * window scale), when known: 0 when it takes no data. Unknown (absent) when the field was not 0
   * and the scale is not known (the handshake was not seen).
   */
  peerWindow?: number;
  /** The peer's window scale shift (RFC 7323), when known: reads the window of its answers. */
  peerWindowShift?: number;
  /** Last TSval each side sent, when the connection uses timestamps. */
  deadTsval?: number;
  peerTsval?: number;
  /**
   * How long ago (ms, when the engine starts) the dead side sent deadTsval. Its TSval clock has
   * moved on by about as much (Linux: 1 kHz), so forged segments add it: a TSval the peer has
   * already seen exceeded would be dropped by its PAWS check (RFC 7323), a larger one is not.
   */
  deadTsvalAgeMs?: number;
  /** For goodbyes: whether the streams sit at a message boundary, and why not. */
  atBoundary?: boolean;
  boundaryReason?: string;
}

export interface DeadConnection {
  /** The failed side: its address is now ours. */
  local: Endpoint;
  peer: Endpoint;
  tracked?: TrackedState;
  /** When `tracked` was last current, ms since the epoch (to merge several sources). */
  observedAt?: number;
}

/** A segment the peer sent towards the dead side. */
export interface PeerAnswer {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  tsval?: number;
  tsecr?: number;
  /** Data the peer sent (a retransmission of its own, not an answer to us). */
  payloadLength?: number;
  /** Its raw 16-bit window field (the peer's receive window, before its scale). */
  window?: number;
}

/**
 * A raw window field in bytes, when that can be known: 0 is 0 at any scale; otherwise only with
 * the sender's window scale shift (RFC 7323).
 */
export function windowBytes(raw: number, shift: number | undefined): number | undefined {
  if (raw === 0) return 0;
  return shift === undefined ? undefined : raw * 2 ** shift;
}

export interface EngineIO {
  send(spec: SegmentSpec): void;
  now(): number;
}

export interface EngineOptions {
  /** How long to wait for a peer's answer before trying again. */
  answerTimeoutMs?: number;
  /** Attempts per step (each after the per-socket rate limit has passed). */
  attempts?: number;
  /** The peer kernel's per-socket answer rate limit (net.ipv4.tcp_invalid_ratelimit). */
  rateLimitMs?: number;
  /** Send the method as asked even when the goodbye boundary is unknown (operator override). */
  assumeBoundary?: boolean;
  /**
   * How long verification probes wait after the closing segments. They double the packets the
   * peers' hosts must process; letting the resets land first halves the time to the last peer's
   * error for 1,000 connections on a small machine. Default: 0.05 ms per connection, at most 50.
   */
  verifyDelayMs?: number;
}

type Phase =
  /** Waiting for a challenge/dup ACK that tells the peer's exact RCV.NXT. */
  | 'learning'
  /** The closing segment is out; waiting for the peer's ACK of it (or silence, for RST). */
  | 'closing'
  | 'done';

interface Conn {
  c: DeadConnection;
  action: CloseMethod['kind'] | 'rst';
  fallback?: string;
  phase: Phase;
  rcvNxt?: number;
  sndNxt?: number;
  seqSource?: CloseResult['seqSource'];
  peerTsval?: number;
  deadTsval?: number;
  /** When (engine clock) the dead side sent deadTsval, as far as known. */
  deadTsvalAt?: number;
  sentSeq?: number;
  /** The TSval of our last segment with a timestamp option. */
  sentTsval?: number;
  /** The peer's receive window, bytes, when known (see TrackedState.peerWindow). */
  peerWindow?: number;
  peerWindowShift?: number;
  /** Where the goodbye's first byte sits in the peer's sequence space, once it has been sent. */
  goodbyeSeq?: number;
  /** The ack the peer must send to show it took our FIN / data. */
  expectAck?: number;
  attempts: number;
  /** False when the outcome follows from kernel semantics rather than an answer from the peer. */
  verified: boolean;
  deadline: number;
  started: number;
  result?: CloseResult;
}

const PROBE_BACKOFF = 0x1000_0000; // far behind RCV.NXT: out of any window, never acceptable

/** The longest tick() spends beginning connections before it returns (ms): one slice of the loop. */
export const BEGIN_SLICE_MS = SLICE_MS;

export class CloseEngine {
  /** The connections begun so far, by key (an answer can only be for one of them). */
  private readonly conns = new Map<string, Conn>();
  /** Connections as given; start() and the next ticks key and begin them a slice at a time. */
  private readonly input: DeadConnection[];
  private next = 0;
  private started = false;
  /** Until every connection has begun: verification probes held back behind the closing segments. */
  private deferProbes: SegmentSpec[] | undefined;
  /** Probes waiting for verifyDelayMs after start(); sent by tick(). */
  private pendingProbes: { at: number; probes: SegmentSpec[] } | undefined;
  private readonly timeout: number;
  private readonly attempts: number;
  private readonly rateLimit: number;
  /** The goodbye method's message (the same bytes for every connection). */
  private readonly goodbye: Buffer | undefined;

  constructor(
    connections: DeadConnection[],
    private readonly method: CloseMethod,
    private readonly io: EngineIO,
    private readonly options: EngineOptions = {},
  ) {
    this.timeout = options.answerTimeoutMs ?? 250;
    this.attempts = options.attempts ?? 3;
    this.rateLimit = options.rateLimitMs ?? 550;
    this.goodbye = method.kind === 'goodbye' ? method.plugin.message() : undefined;
    this.input = connections;
  }

  private readonly canon = canonicalizer();

  /** The key answers are matched on: the addon's (canonical) text of the addresses. */
  private keyOf(c: DeadConnection): string {
    return canonicalConnectionKey({ address: this.canon(c.local.address), port: c.local.port }, { address: this.canon(c.peer.address), port: c.peer.port });
  }

  /**
   * Begins: every connection's first segment goes out, a slice of BEGIN_SLICE_MS at a time (this
   * call and the next ticks: with thousands of connections the caller's event loop, which also
   * sends heartbeats, runs between slices; `beginning` says whether some are left). Verification
   * probes go out after all the closing segments, so the last peer is not kept waiting behind them.
   */
  start(): void {
    this.started = true;
    this.deferProbes = [];
    this.beginSlice();
  }

  /** True while start() has connections left to begin (tick() again soon). */
  get beginning(): boolean {
    return this.started && this.next < this.input.length;
  }

  private beginSlice(): void {
    const until = performance.now() + BEGIN_SLICE_MS;
    while (this.next < this.input.length) {
      const c = this.input[this.next++]!;
      const key = this.keyOf(c);
      if (!this.conns.has(key)) {
        // Its start: the wait for an answer counts from its first segment, not from start().
        const now = this.io.now();
        const k: Conn = { c, action: this.method.kind, phase: 'learning', attempts: 0, verified: true, deadline: now, started: now };
        this.conns.set(key, k);
        this.begin(k);
      }
      if ((this.next & 63) === 0 && performance.now() >= until) return;
    }
    const probes = this.deferProbes ?? [];
    this.deferProbes = undefined;
    const delay = this.options.verifyDelayMs ?? Math.min(50, this.conns.size * 0.05);
    if (delay <= 0) {
      for (const p of probes) this.io.send(p);
      return;
    }
    const at = this.io.now() + delay;
    this.pendingProbes = { at, probes };
    // The wait for the probes' answers starts when they go out.
    for (const k of this.conns.values()) if (k.phase === 'closing' && k.action === 'rst' && k.seqSource === 'tracked') k.deadline = Math.max(k.deadline, at + this.timeout);
  }

  /** Feeds a segment seen on the wire; ignores anything that is not from a peer we are closing. */
  answer(seg: PeerAnswer): void {
    const k = this.conns.get(canonicalConnectionKey({ address: seg.dst, port: seg.dport }, { address: seg.src, port: seg.sport }));
    if (!k || k.phase === 'done') return;
    if (seg.flags & TCP_RST) {
      // A RST that acks our FIN or data: the peer took it, then closed its side with a reset
      // (Linux does, closing with unread data). It had the connection.
      if (k.phase === 'closing' && k.expectAck !== undefined && seg.flags & TCP_ACK && seqDiff(k.expectAck, seg.ack) >= 0) {
        this.finish(k, this.deliveredOutcome(k), true);
        return;
      }
      // Otherwise our segment reached a peer with no such connection: either our RST already
      // did its job (the answer to the verification probe) or the peer had closed on its own.
      this.finish(k, k.phase === 'closing' && k.action === 'rst' ? 'reset' : 'not-connected', true);
      return;
    }
    if (!(seg.flags & TCP_ACK)) return;
    if (seg.window !== undefined) k.peerWindow = windowBytes(seg.window, k.peerWindowShift);
    if (seg.tsval !== undefined) k.peerTsval = seg.tsval;
    // The peer echoes the last TSval it accepted from the dead side: anything above passes PAWS.
    // One above what we used means our segment was dropped as old (PAWS) and drew this ACK.
    const now = this.io.now();
    const pawsDropped = seg.tsecr !== undefined && k.sentTsval !== undefined && seqDiff(k.sentTsval, seg.tsecr) > 0;
    if (seg.tsecr !== undefined && (k.deadTsval === undefined || seqDiff(this.tsvalAt(k, now), seg.tsecr) > 0)) {
      k.deadTsval = seg.tsecr;
      k.deadTsvalAt = now;
    }
    if (k.phase === 'closing' && k.expectAck !== undefined && seqDiff(k.expectAck, seg.ack) >= 0) {
      this.finish(k, this.deliveredOutcome(k), true);
      return;
    }
    // The peer took part of the goodbye (a stack that trims a segment to its window): the rest
    // follows from where it stands.
    const partOfGoodbye = k.phase === 'closing' && k.action === 'goodbye' && k.sentSeq !== undefined && seqDiff(k.sentSeq, seg.ack) > 0 && this.withinGoodbye(k, seg.ack);
    if (partOfGoodbye) {
      k.rcvNxt = seg.ack;
      k.sndNxt = seg.seq;
      this.sendClosing(k);
      return;
    }
    // A segment that crossed our RST on the wire and acks exactly the value we used confirms
    // it; the verification probe's answer will follow.
    if (k.phase === 'closing' && k.action === 'rst' && k.sentSeq !== undefined && seg.ack === k.sentSeq) return;
    // A challenge or duplicate ACK (or any segment of the peer's): its ack field is the peer's
    // exact RCV.NXT, its seq the peer's SND.NXT.
    const learnedFrom: CloseResult['seqSource'] = (seg.payloadLength ?? 0) > 0
      ? 'peer-segment'
      : k.phase === 'learning' && k.sentSeq === undefined ? 'dup-ack' : 'challenge-ack';
    const changed = k.rcvNxt !== seg.ack;
    k.rcvNxt = seg.ack;
    k.sndNxt = seg.seq;
    k.seqSource = learnedFrom;
    // A plain ACK of older data, unless it says our segment failed PAWS (then at once, with the
    // TSval it taught us, rather than after the answer timeout) or that the peer's window cannot
    // take our data (then the fallback at once: resending into it would be dropped again).
    const squeezed = k.phase === 'closing' && this.windowShortfall(k) !== undefined;
    if (k.phase === 'closing' && !changed && k.action !== 'rst' && !pawsDropped && !squeezed) return;
    // A peer that never received all the dead side sent is not where the tracked stream says:
    // no message can be placed there. A FIN, an urgent byte or a RST at its exact value still works.
    const tracked = k.c.tracked;
    if (k.action === 'goodbye' && tracked !== undefined && seqDiff(tracked.deadNextSeq, seg.ack) !== 0 && !this.withinGoodbye(k, seg.ack)) {
      k.fallback ??= `peer's RCV.NXT ${seg.ack} differs from the tracked stream position`;
      k.action = 'rst';
    }
    this.sendClosing(k);
  }

  /** Begins the next slice of connections, advances timers; call every few milliseconds (at once while `beginning`). */
  tick(): void {
    if (this.beginning) this.beginSlice();
    const now = this.io.now();
    if (this.pendingProbes && now >= this.pendingProbes.at) {
      const { probes } = this.pendingProbes;
      this.pendingProbes = undefined;
      for (const p of probes) this.io.send(p);
    }
    for (const k of this.conns.values()) {
      if (k.phase === 'done' || now < k.deadline) continue;
      if (k.phase === 'closing' && this.onlyFinLeft(k) && k.peerWindow === 0) {
        // Unacknowledged in a zero window: this peer drops a bare FIN there (Linux takes one, at
        // once), and will drop it again as long as its application does not read.
        this.fallBack(k, 'rst', "the peer's receive window is 0 and it did not take the FIN: RST instead");
        this.sendClosing(k);
        continue;
      }
      if (k.attempts >= this.attempts) {
        const what = k.phase === 'learning' ? 'no answer to probes' : `no answer to the ${k.action}`;
        this.finish(k, 'failed', false, `${what} after ${k.attempts} attempts`);
        continue;
      }
      if (k.phase === 'learning') this.probe(k);
      else this.sendClosing(k);
    }
  }

  get done(): boolean {
    if (this.next < this.input.length) return false;
    for (const k of this.conns.values()) if (k.phase !== 'done') return false;
    return true;
  }

  /** The earliest time tick() has work to do, for drivers that sleep. */
  nextDeadline(): number {
    if (this.beginning) return this.io.now();
    let d = this.pendingProbes?.at ?? Infinity;
    for (const k of this.conns.values()) if (k.phase !== 'done') d = Math.min(d, k.deadline);
    return d;
  }

  /** One result per connection (duplicates given once), in the order given. */
  results(): CloseResult[] {
    const out = [...this.conns.values()].map((k) => k.result ?? this.resultOf(k, 'failed', false, 'not finished'));
    // Connections never begun (the caller's deadline came first) fail with that said (each
    // once: the input may name one twice). Nothing is recorded: asked again, the same answer.
    const notBegun = new Set<string>();
    for (let i = this.next; i < this.input.length; i++) {
      const c = this.input[i]!;
      const key = this.keyOf(c);
      if (this.conns.has(key) || notBegun.has(key)) continue;
      notBegun.add(key);
      const now = this.io.now();
      const k: Conn = { c, action: this.method.kind, phase: 'done', attempts: 0, verified: false, deadline: now, started: now };
      out.push(this.resultOf(k, 'failed', false, 'not begun before the deadline'));
    }
    return out;
  }

  private begin(k: Conn): void {
    const t = k.c.tracked;
    if (this.method.kind === 'goodbye' && !this.options.assumeBoundary && t?.atBoundary !== true) {
      k.action = 'rst';
      k.fallback = t?.boundaryReason ?? 'stream position unknown: the connection was not tracked with its payload';
    }
    if (t) {
      k.peerWindow = t.peerWindow;
      k.peerWindowShift = t.peerWindowShift;
      k.deadTsval = t.deadTsval;
      if (t.deadTsval !== undefined) k.deadTsvalAt = this.io.now() - (t.deadTsvalAgeMs ?? 0);
      k.peerTsval = t.peerTsval;
      const exact = seqDiff(t.deadNextSeq, t.peerAck) === 0;
      if (k.action === 'rst' || exact) {
        // Our best value. If it is wrong but inside the window, the RST draws a challenge ACK
        // with the exact one (handled in answer()).
        k.rcvNxt = t.deadNextSeq;
        k.sndNxt = t.peerNextSeq;
        k.seqSource = 'tracked';
        this.sendClosing(k);
        return;
      }
    }
    this.probe(k);
  }

  private probe(k: Conn): void {
    k.phase = 'learning';
    const base = k.rcvNxt ?? k.c.tracked?.deadNextSeq;
    const seqs =
      base === undefined
        ? // Nothing known: two probes half the sequence space apart, so one is out of any window.
          [randomSeq(), 0].map((s, i, a) => (i === 0 ? s : seqAdd(a[0]!, 0x8000_0000)))
        : [seqAdd(base, -PROBE_BACKOFF)];
    for (const seq of seqs) this.io.send(this.spec(k, { seq, ack: k.sndNxt ?? 0, flags: TCP_ACK }));
    this.arm(k);
  }

  private sendClosing(k: Conn): void {
    const short = this.windowShortfall(k);
    if (short) this.fallBack(k, short.to, short.reason);
    k.phase = 'closing';
    const seq = k.rcvNxt!;
    const ack = k.sndNxt ?? 0;
    k.sentSeq = seq;
    const ts = this.timestamps(k);
    switch (k.action) {
      case 'rst':
        this.io.send(this.spec(k, { seq, ack, flags: TCP_RST | TCP_ACK, window: 0 }));
        // Verification probe: if the RST was exact, the peer no longer has the connection and
        // answers this with a RST; if not, it answers with its exact RCV.NXT.
        k.expectAck = undefined;
        if (k.seqSource !== 'tracked') {
          // The value came from the peer's own ACK, so the RST is exact and final; a further
          // probe inside the peer's 500 ms rate limit would go unanswered anyway.
          k.verified = false;
          this.finish(k, 'reset', true);
          return;
        }
        const probe = this.spec(k, { seq: seqAdd(seq, -PROBE_BACKOFF), ack, flags: TCP_ACK });
        if (this.deferProbes) this.deferProbes.push(probe);
        else this.io.send(probe);
        break;
      case 'fin':
        this.io.send(this.spec(k, { seq, ack, flags: TCP_FIN | TCP_ACK, ...ts }));
        k.expectAck = seqAdd(seq, 1);
        break;
      case 'break': {
        // One byte of urgent data, as Oracle Net's break: the peer sees it with recv(MSG_OOB)
        // or SIGURG. Linux (tcp_stdurg=0) takes the byte before the urgent pointer as urgent.
        this.io.send(this.spec(k, { seq, ack, flags: TCP_URG | TCP_PSH | TCP_ACK, urgentPointer: 1, payload: Buffer.from('!'), ...ts }));
        k.expectAck = seqAdd(seq, 1);
        break;
      }
      case 'goodbye': {
        // From where the peer stands in it: all of it, or what a partial ACK left.
        const taken = k.goodbyeSeq === undefined ? -1 : seqDiff(k.goodbyeSeq, seq);
        if (taken < 0 || taken > this.goodbye!.length) k.goodbyeSeq = seq;
        const payload = this.goodbye!.subarray(Math.max(0, taken));
        this.io.send(this.spec(k, { seq, ack, flags: (payload.length > 0 ? TCP_PSH : 0) | TCP_FIN | TCP_ACK, ...(payload.length > 0 ? { payload } : {}), ...ts }));
        k.expectAck = seqAdd(seq, payload.length + 1);
        break;
      }
    }
    this.arm(k);
  }

  /**
   * Whether the peer's receive window, when known, is too small for the data of the closing
   * segment, and the fallback then: data beyond the window is dropped, however often it is sent.
   * A goodbye becomes a FIN (the peer reads what it has, then end-of-file, at the boundary the
   * goodbye would have taken), or a RST once part of it was taken (the stream is mid-message);
   * a break becomes a RST (an interrupt the peer sees without reading through a full buffer).
   */
  private windowShortfall(k: Conn): { to: 'fin' | 'rst'; reason: string } | undefined {
    const w = k.peerWindow;
    if (w === undefined) return undefined;
    if (k.action === 'break' && w === 0) return { to: 'rst', reason: "the peer's receive window is 0: the urgent byte cannot be delivered; RST instead" };
    if (k.action !== 'goodbye') return undefined;
    const taken = this.goodbyeTaken(k);
    if (taken === this.goodbye!.length) return undefined; // only its FIN is left: as for a FIN
    if (taken > 0) {
      // A peer that trims to its window takes the rest as its window opens; a closed one, nothing.
      return w === 0 ? { to: 'rst', reason: "the peer took part of the goodbye, then its receive window fell to 0: RST instead" } : undefined;
    }
    if (w >= this.goodbye!.length) return undefined;
    return w === 0
      ? { to: 'fin', reason: "the peer's receive window is 0: the goodbye cannot be delivered; FIN instead" }
      : { to: 'fin', reason: "the peer's receive window is smaller than the goodbye: FIN instead" };
  }

  /** How many bytes of the goodbye the peer has taken (0 before it is sent). */
  private goodbyeTaken(k: Conn): number {
    if (k.goodbyeSeq === undefined || k.rcvNxt === undefined) return 0;
    const taken = seqDiff(k.goodbyeSeq, k.rcvNxt);
    return taken > 0 && taken <= this.goodbye!.length ? taken : 0;
  }

  /** Whether what is left to deliver is a bare FIN. */
  private onlyFinLeft(k: Conn): boolean {
    return k.action === 'fin' || (k.action === 'goodbye' && this.goodbyeTaken(k) === this.goodbye!.length);
  }

  /** Whether `ack` lies inside the goodbye sent (past its first byte, before its FIN is acked). */
  private withinGoodbye(k: Conn, ack: number): boolean {
    return k.goodbyeSeq !== undefined && k.expectAck !== undefined && seqDiff(k.goodbyeSeq, ack) > 0 && seqDiff(ack, k.expectAck) > 0;
  }

  /** Another action than the one under way, with why (reasons add up when one follows another); its own attempts. */
  private fallBack(k: Conn, to: 'fin' | 'rst', reason: string): void {
    k.action = to;
    k.fallback = k.fallback === undefined ? reason : `${k.fallback}; ${reason}`;
    k.attempts = 0;
  }

  /** A timestamp option the peer's PAWS check accepts, when the connection uses timestamps. */
  private timestamps(k: Conn): { tsval?: number; tsecr?: number } {
    if (k.deadTsval === undefined || k.peerTsval === undefined) return {};
    k.sentTsval = this.tsvalAt(k, this.io.now());
    return { tsval: k.sentTsval, tsecr: k.peerTsval };
  }

  /** The dead side's TSval clock now, estimated from the last value known (1 ms per tick, + 1). */
  private tsvalAt(k: Conn, now: number): number {
    const elapsed = k.deadTsvalAt === undefined ? 0 : Math.max(0, Math.floor(now - k.deadTsvalAt));
    return seqAdd(k.deadTsval ?? 0, elapsed + 1);
  }

  private arm(k: Conn): void {
    k.attempts++;
    // Retries wait out the peer's per-socket rate limit, or the retry would be ignored.
    k.deadline = this.io.now() + (k.attempts === 1 ? this.timeout : Math.max(this.timeout, this.rateLimit));
  }

  private spec(k: Conn, s: Omit<SegmentSpec, 'src' | 'dst' | 'sport' | 'dport'>): SegmentSpec {
    return {
      src: k.c.local.address,
      sport: k.c.local.port,
      dst: k.c.peer.address,
      dport: k.c.peer.port,
      window: k.c.tracked?.deadWindow ?? 65535,
      ...s,
    };
  }

  private deliveredOutcome(k: Conn): CloseOutcome {
    return k.action === 'fin' ? 'closed' : k.action === 'break' ? 'urgent-delivered' : 'goodbye-delivered';
  }

  private finish(k: Conn, outcome: CloseOutcome, ok: boolean, error?: string): void {
    k.phase = 'done';
    k.result = this.resultOf(k, outcome, ok, error);
  }

  private resultOf(k: Conn, outcome: CloseOutcome, ok: boolean, error?: string): CloseResult {
    const action = k.action === 'goodbye' ? methodName(this.method) : k.action;
    return {
      local: k.c.local,
      peer: k.c.peer,
      method: methodName(this.method),
      action,
      ...(k.sentSeq !== undefined ? { seq: k.sentSeq, ack: k.sndNxt ?? 0 } : {}),
      ...(k.seqSource ? { seqSource: k.seqSource } : {}),
      outcome,
      ok,
      verified: ok && k.verified,
      ...(k.fallback ? { fallback: k.fallback } : {}),
      ...(error ? { error } : {}),
      elapsedMs: Math.round((this.io.now() - k.started) * 1000) / 1000,
    };
  }
}

function randomSeq(): number {
  return Math.floor(Math.random() * 0x1_0000_0000);
}
