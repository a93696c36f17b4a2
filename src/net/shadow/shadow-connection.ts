// The backup's view of one client connection to a service it may have to continue (issue 12,
// seed 003): built only from the segments a capture saw (a mirror of the primary's port, or the
// primary's own agent), from the SYN on. It keeps both byte streams in order, the handshake's
// options, the latest windows and timestamps, and, through the protocol plugin, where the
// answered requests end; it lets go of what is no longer needed (server bytes the client
// acknowledged, requests the server answered). When the primary dies, plan() says how to rebuild
// the connection on the backup (a TcpRepairState, the requests to replay, the session to restore),
// or why it cannot be proven and must be reset.
//
// Sources: RFC 9293 (SND.UNA, RCV.NXT, SND.WL1), RFC 7323 (window scale, timestamps), RFC 2018
// (SACK-permitted), issue 12's feasibility run (the restore sequence that worked; docs/CONTINUE.md).
import type { ParsedSegment } from '../../native.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../native.js';
import type { DeadConnection } from '../close-engine.js';
import { peerWindowKnowledge } from '../flow-knowledge.js';
import { familyOf, type Endpoint } from '../endpoint.js';
import { seqAdd } from '../seq.js';
import type { TcpRepairState } from '../tcp-repair-state.js';
import { ArrivalTimes } from './arrival-times.js';
import { gapReason, type ChunkTime, type ContinuePlugin, type ExchangeTracker, type ProtocolGoodbye, type ReadOnlyReplay, type ReplyResume, type SessionPreamble } from './exchange-tracker.js';
import { ReplyDigest, type ReplyFingerprint } from './reply-digest.js';
import { StreamReassembly } from './stream-reassembly.js';
import type { ProbeCaptureTimes } from './probe-capture-times.js';
import type { RequestLog } from './request-log.js';

/** What one end said in its SYN. */
interface HandshakeSide {
  isn: number;
  mss?: number;
  wscale?: number;
  sack: boolean;
  timestamps: boolean;
}

/** The latest of what one end sent. */
interface SenderState {
  /** Highest ACK it sent (seq space of the other direction), once it sent one. */
  ack?: number;
  /** Its last raw window field and the time it was seen. */
  window: number;
  /** Its largest window, bytes (scaled). */
  maxWindowBytes: number;
  /** Sequence number of the last segment that carried its window (SND.WL1 for the receiver). */
  windowSeq: number;
  tsval?: number;
  tsvalAtMs?: number;
  lastSeenMs: number;
}

/** A transaction a restored session was inside, to rebuild on the new upstream (ContinuePlan.transaction). */
export interface RestoreTransaction {
  replay: ReadOnlyReplay;
  /** Said instead when the rebuild fails (its reason: why the session was inside a transaction). */
  goodbye: ProtocolGoodbye;
}

/** How the backup rebuilds a connection, or why it resets it instead. */
export type ContinuePlan =
  | {
      kind: 'restore';
      server: Endpoint;
      client: Endpoint;
      /** The socket to restore (bound to the server's endpoint; its refill is sent after repair off). */
      state: TcpRepairState;
      /** Client bytes after the last answered request, for the new upstream (after the preamble). */
      replay: Buffer;
      preamble: SessionPreamble;
      /**
       * The dead server had sent part of the reply to the first replayed request (it is in the
       * refill, or the client has it): the new upstream's reply must begin with exactly those
       * bytes (their count and CRCs); the relay drops them, and resets the client if they differ.
       */
      expectReply?: ReplyFingerprint;
      /**
       * Instead of expectReply: the new upstream is asked for the rest of that reply (the
       * plugin's resumeReply: an HTTP range). `replay` carries its insert already; the relay reads
       * the reply through its filter (createFilter()), which drops what the client has.
       */
      resumeReply?: ReplyResume;
      /**
       * Not continued but ended cleanly (the plugin's goodbye, or the server had sent its FIN):
       * the restored socket gets these bytes after its refill, then FIN; no upstream, nothing
       * replayed (replay and preamble empty).
       */
      goodbye?: ProtocolGoodbye;
      /**
       * The client had sent its FIN after the replay's bytes (it half-closed; the server was in
       * CLOSE-WAIT): state.recv.seq counts the FIN, and the restored socket's read side is shut
       * (shutdownRead) so its reader sees the end of the stream after the replay.
       */
      clientEnded?: true;
      /**
       * With a replay: when the capture saw its first byte (the first request the dead server
       * did not answer arrived then; late: held behind a hole, it may have come earlier). For a
       * replay check that orders it against the dead server's other output (WAL it shipped).
       */
      unansweredSince?: ChunkTime;
      /**
       * With a replay and no reply begun: how to replay it so that it cannot write (the plugin's
       * readOnlyReplay), or why it cannot be. For a replay check that cannot tell whether the
       * dead server ran the requests: a read may still be replayed.
       */
      readOnlyReplay?: ReadOnlyReplay | string;
      /**
       * The session was inside a transaction (the plugin's goodbye) that the new upstream can
       * rebuild: the relay sends `replay.before` after the preamble and the promotion, and says
       * `goodbye` instead of relaying when its judge fails. `replay` (the bytes) is empty.
       */
      transaction?: RestoreTransaction;
      /** When a segment of it was last seen (ms since the epoch): the most active go first. */
      lastSeenMs: number;
      /**
       * Why the copy's end is not proven (a capture loss since which an end has not shown its
       * stream whole): the client must show it before the connection is relayed (TailProof),
       * or it is reset.
       */
      unproven?: string;
    }
  | {
      kind: 'reset';
      server: Endpoint;
      client: Endpoint;
      /** Why the connection cannot be continued (logged with the RST). */
      reason: string;
      /** For the close engine: what was seen, so the RST can be exact (absent: never saw both sides). */
      dead: DeadConnection;
    };

/**
 * Client bytes the copy holds past a restore's RCV.NXT (segments that reached the dead server
 * after the plans), and how the client last spoke: what re-injection delivers to the restored
 * socket. Sequence space: `seq` is the first byte's.
 */
export interface LateClientData {
  seq: number;
  bytes: Buffer;
  /** The client's FIN follows the bytes. */
  fin: boolean;
  /** The client's last window field (raw, unscaled). */
  window: number;
  /** The client's last TSval, when it sends timestamps. */
  tsval?: number;
}

export interface ShadowOptions {
  plugin: ContinuePlugin;
  /** Where the plugin records the writes it can tell apart, for the replay matcher (RequestLog). */
  requestLog?: RequestLog;
  /** Where the plugin records the capture times of the stream probe's PUBLISHes (ProbeCaptureTimes). */
  probeTimes?: ProbeCaptureTimes;
  /** Bound on the bytes kept per direction (bytes); default 8 MiB. */
  maxRetainedBytes?: number;
}

const DEFAULT_MAX_RETAINED = 8 * 1024 * 1024;
/** The TCP MSS both ends assume without the option (RFC 9293 §3.7.1). */
const DEFAULT_MSS = 536;

export class ShadowConnection {
  private clientSyn: HandshakeSide | null = null;
  private serverSyn: HandshakeSide | null = null;
  private toServer: StreamReassembly | null = null;
  private toClient: StreamReassembly | null = null;
  private readonly tracker: ExchangeTracker;
  private readonly client0: SenderState = { window: 0, maxWindowBytes: 0, windowSeq: 0, lastSeenMs: 0 };
  private readonly server0: SenderState = { window: 0, maxWindowBytes: 0, windowSeq: 0, lastSeenMs: 0 };
  /** Why the connection can no longer be continued whatever happens next, or null. */
  private ended: string | null = null;
  /** After a capture loss: why, and which ends have since shown their streams whole (suspect()). */
  private unsynced: { reason: string; countedAtMs: number; server: boolean; client: boolean } | null = null;
  /**
   * Server stream offset where the reply in progress starts (the last complete one's end), and
   * the digest of its bytes so far (null while there are none): what a replay must reproduce.
   */
  private partialFrom = 0;
  private partialHash: ReplyDigest | null = null;
  private readonly maxRetained: number;
  /** The capture time of the segment being taken (ms since the epoch): the trackers' ChunkTime. */
  private segmentMs = 0;
  /** When the client's bytes not yet answered were captured (ContinuePlan.unansweredSince). */
  private readonly arrivals = new ArrivalTimes();
  /** Set once a RST was seen: nothing is left to continue or to close. */
  reset = false;
  lastSeenMs = 0;

  constructor(
    readonly server: Endpoint,
    readonly client: Endpoint,
    options: ShadowOptions,
  ) {
    this.tracker = options.plugin.createTracker({
      connection: `${client.address}|${client.port}`,
      ...(options.requestLog ? { log: options.requestLog } : {}),
      ...(options.probeTimes ? { probes: options.probeTimes } : {}),
    });
    this.maxRetained = options.maxRetainedBytes ?? DEFAULT_MAX_RETAINED;
  }

  /** One captured segment of this connection; fromServer: its source is the server's endpoint. */
  segment(s: ParsedSegment, fromServer: boolean, nowMs: number): void {
    this.lastSeenMs = nowMs;
    if (s.flags & TCP_RST) {
      this.reset = true;
      this.ended ??= 'reset';
      return;
    }
    if (s.flags & TCP_SYN) this.handshake(s, fromServer);
    const sender = fromServer ? this.server0 : this.client0;
    sender.lastSeenMs = nowMs;
    if (s.tsval !== undefined) {
      sender.tsval = s.tsval;
      sender.tsvalAtMs = s.timeMs ?? nowMs;
    }
    const stream = fromServer ? this.toClient : this.toServer;
    this.segmentMs = s.timeMs ?? nowMs;
    if (!stream) {
      if (!(s.flags & TCP_SYN)) this.ended ??= 'the connection was joined mid-stream (its SYN was not seen)';
      return;
    }
    if (!(s.flags & TCP_SYN)) {
      sender.window = s.window;
      sender.windowSeq = s.seq;
      const scaled = s.window * 2 ** this.scaleOf(fromServer);
      sender.maxWindowBytes = Math.max(sender.maxWindowBytes, scaled);
    }
    if (this.unsynced) this.checkSync(s, fromServer);
    if (s.flags & TCP_ACK) this.acked(s.ack, fromServer);
    // Data from an end that holds bytes the capture lacks (its ACK) may answer them (a reply to a
    // request the capture lost): the hole is skipped before the tracker takes that data, so the
    // tracker pairs them, not the reply with nothing. A pure ACK waits REORDER_MS instead.
    if (s.payloadLength > 0) (fromServer ? this.toServer : this.toClient)?.skipAcknowledged();
    const dataSeq = s.flags & TCP_SYN ? seqAdd(s.seq, 1) : s.seq;
    if (s.payloadLength > 0) stream.data(dataSeq, s.payload ?? Buffer.alloc(0), s.payloadLength);
    if (s.flags & TCP_FIN) {
      stream.fin(stream.offsetOf(dataSeq) + s.payloadLength);
      // Both ends closing: each application has closed its side, nothing is left to continue.
      if (this.toServer?.finAt != null && this.toClient?.finAt != null) this.ended ??= 'both ends sent a FIN (the connection was closing)';
    }
    this.letGo();
  }

  /** Why the connection can no longer be continued (FIN, RST, joined mid-stream...), or null. */
  get endedReason(): string | null {
    return this.ended;
  }

  /** The client's SYN sequence number, once seen. */
  get clientIsn(): number | undefined {
    return this.clientSyn?.isn;
  }

  /**
   * The capture lost frames while this connection was open: any of them may have been one of its
   * segments, and a lost last segment leaves no trace (the client may hold bytes the backup never
   * saw). The connection is unprovable until each end has sent a segment that starts exactly
   * where the copy of its stream ends and acknowledges exactly the copy of the other's: then
   * nothing of it was lost before (a lost byte would put one of those numbers ahead of the copy).
   * countedAtMs (the capture clock, as ParsedSegment.timeMs): when the loss was counted. Only a
   * segment captured after it shows anything: one the ring still held, captured before the
   * count, may precede the lost frames (a request dropped after it would pass unseen). A second
   * loss while unproven keeps the later of the two counts.
   */
  suspect(reason: string, countedAtMs = Number.NEGATIVE_INFINITY): void {
    if (this.ended) return;
    this.unsynced = { reason, countedAtMs: Math.max(countedAtMs, this.unsynced?.countedAtMs ?? countedAtMs), server: false, client: false };
  }

  /** With unsynced: whether this segment (before its data is taken) shows its sender's stream whole. */
  private checkSync(s: ParsedSegment, fromServer: boolean): void {
    const u = this.unsynced;
    const own = fromServer ? this.toClient : this.toServer;
    const other = fromServer ? this.toServer : this.toClient;
    if (!u || !own || !other || s.flags & TCP_SYN || !(s.flags & TCP_ACK) || own.hasHole || other.hasHole) return;
    if (this.segmentMs <= u.countedAtMs) return;
    // After a FIN its sender's segments start one past its last byte, and ACKs of it end there.
    if ((s.seq !== own.seqAt(own.next) && s.seq !== own.endSeq) || (s.ack !== other.seqAt(other.next) && s.ack !== other.endSeq)) return;
    if (fromServer) u.server = true;
    else u.client = true;
    if (u.server && u.client) this.unsynced = null;
  }

  /** How to continue this connection now (nowMs: ms since the epoch, ages the server's TSval). */
  plan(nowMs: number): ContinuePlan {
    const blocked = (reason: string): ContinuePlan => ({ kind: 'reset', server: this.server, client: this.client, reason, dead: this.deadConnection(nowMs) });
    const cs = this.clientSyn;
    const ss = this.serverSyn;
    // Bytes one end acknowledged that the capture still lacks are not waited for any longer.
    this.toServer?.skipAcknowledged();
    this.toClient?.skipAcknowledged();
    if (this.ended) return blocked(this.ended);
    // A capture loss not made good: a lost frame in the middle of a stream shows as a hole
    // (below); one at its end does not, and only the client can tell (the tail proof).
    const u = this.unsynced;
    const unproven = u
      ? `${u.reason}, and ${u.server ? 'the client has not shown its stream whole since' : u.client ? 'the server has not shown its stream whole since' : 'neither end has shown its stream whole since'}`
      : undefined;
    if (!cs || !ss || !this.toServer || !this.toClient) return blocked('the handshake was not seen');
    if (this.client0.ack === undefined) return blocked('the handshake was not completed');
    for (const [name, stream] of [['client', this.toServer], ['server', this.toClient]] as const) {
      if (stream.broken) return blocked(`the ${name}'s stream cannot be rebuilt: ${stream.broken}`);
      // A FIN follows every byte its end sent: one missing before it will not come any more.
      if (stream.finAt !== null && !stream.finished) return blocked(`the ${name}'s bytes before its FIN are missing from the capture`);
    }
    // Bytes either end acknowledged beyond the copy were skipped above, or ended it (a request
    // the capture lost leaves its reply unpaired: the reason names the loss, not the pairing).
    // An ACK of the server's FIN acknowledges no byte.
    const ackedTo = this.toClient.offsetOf(this.client0.ack);
    const clientAcked = this.toClient.finished ? Math.min(ackedTo, this.toClient.next) : ackedTo;
    const proof = unproven ? { unproven } : {};
    const noSession = { bytes: Buffer.alloc(0), replies: 0 };
    if (this.toClient.finished) {
      // The server had closed its side (FIN-WAIT, RFC 9293 §3.6): its application is done with
      // the connection, whatever its protocol. The restored socket sends what the client lacks
      // of its bytes, then the FIN, for it; nothing is replayed (a request the client sent after
      // it would have gone unanswered there too).
      const refill = this.toClient.bytes(clientAcked, this.toClient.next);
      if (!refill) return blocked('server bytes the client has not acknowledged were not retained');
      const goodbye: ProtocolGoodbye = { reason: 'the server had closed its side (FIN): the rest of its bytes and its FIN were sent for it', bytes: Buffer.alloc(0) };
      return { kind: 'restore', server: this.server, client: this.client, state: this.repairState(cs, ss, clientAcked, refill, nowMs), replay: Buffer.alloc(0), preamble: noSession, goodbye, lastSeenMs: this.lastSeenMs, ...proof };
    }
    const protocol = this.tracker.blocker();
    if (protocol) return blocked(protocol);
    if (this.toClient.hasHole) return blocked('server bytes are missing from the capture (a hole before later segments)');
    const complete = this.tracker.completeServerBytes();
    // The server sent part of a reply: the client has those bytes, or gets them in the refill.
    // The new upstream is asked for the rest where the protocol can say so (resumeReply: an HTTP
    // range); otherwise the replay's reply must start with the very same bytes (checked by the relay).
    const partial = this.toClient.next - complete;
    const resume = partial > 0 ? (this.tracker.resumeReply?.() ?? null) : null;
    const resumeReply = resume !== null && typeof resume !== 'string' ? resume : undefined;
    const expectReply = partial > 0 && !resumeReply && this.partialHash && this.partialFrom === complete && this.partialHash.length === partial ? this.partialHash.fingerprint() : undefined;
    if (partial > 0 && !resumeReply && !expectReply) {
      return blocked(`the server was in the middle of a reply (${partial} bytes of it sent) that was not followed${typeof resume === 'string' ? `, nor can it be resumed: ${resume}` : ''}`);
    }
    let goodbye = this.tracker.goodbye?.() ?? null;
    if (goodbye && partial > 0) return blocked(`${goodbye.reason}, and the server was in the middle of a reply (no goodbye can follow it)`);
    const refill = this.toClient.bytes(clientAcked, this.toClient.next);
    const answered = this.tracker.answeredClientBytes();
    // Inside a transaction with nothing unanswered: rebuilt on the new upstream if it can be
    // proven to have written nothing; the goodbye is said otherwise (then, or when that fails).
    let transaction: RestoreTransaction | undefined;
    if (goodbye && answered === this.toServer.next && this.tracker.transactionReplay) {
      const t = this.tracker.transactionReplay((from) => this.toServer!.bytes(from, answered));
      if (typeof t === 'string') goodbye = { ...goodbye, reason: `${goodbye.reason}; not rebuilt: ${t}` };
      else {
        transaction = { replay: t, goodbye };
        goodbye = null;
      }
    }
    const unanswered = goodbye ? Buffer.alloc(0) : this.toServer.bytes(answered, this.toServer.next);
    if (!refill) return blocked('server bytes the client has not acknowledged were not retained');
    if (!unanswered) return blocked('client requests not yet answered were not retained');
    const at = resumeReply ? resumeReply.insertAt - answered : 0;
    if (at < 0 || at > unanswered.length) return blocked(`the resume's insertion point (${resumeReply!.insertAt}) lies outside the unanswered requests`);
    const replay = resumeReply ? Buffer.concat([unanswered.subarray(0, at), resumeReply.insert, unanswered.subarray(at)]) : unanswered;
    const state = this.repairState(cs, ss, clientAcked, refill, nowMs);
    // The client had half-closed (the server in CLOSE-WAIT): the replay ends with its FIN.
    const halfClosed = this.toServer.finished ? { clientEnded: true as const } : {};
    if (goodbye) return { kind: 'restore', server: this.server, client: this.client, state, replay, preamble: noSession, goodbye, lastSeenMs: this.lastSeenMs, ...halfClosed, ...proof };
    const since = unanswered.length > 0 ? this.arrivals.at(answered) : undefined;
    const readOnlyReplay = unanswered.length > 0 && partial === 0 ? this.tracker.readOnlyReplay?.(replay) : undefined;
    return {
      kind: 'restore', server: this.server, client: this.client, state, replay, preamble: this.tracker.sessionPreamble(), lastSeenMs: this.lastSeenMs,
      ...(expectReply ? { expectReply } : {}), ...(resumeReply ? { resumeReply } : {}), ...(since ? { unansweredSince: since } : {}),
      ...(readOnlyReplay !== undefined ? { readOnlyReplay } : {}), ...(transaction ? { transaction } : {}), ...halfClosed, ...proof,
    };
  }

  /**
   * The server's socket as the client sees it: SND.UNA at clientAcked with the refill queued
   * (sent after repair off), RCV.NXT past every client byte seen (and its FIN, when it sent one),
   * the handshake's options, the windows and the server's TSval aged to nowMs.
   */
  private repairState(cs: HandshakeSide, ss: HandshakeSide, clientAcked: number, refill: Buffer, nowMs: number): TcpRepairState {
    const wscale = cs.wscale !== undefined && ss.wscale !== undefined ? { send: cs.wscale, recv: ss.wscale } : null;
    const timestamps = cs.timestamps && ss.timestamps && this.server0.tsval !== undefined;
    const rcvNxt = this.toServer!.endSeq;
    const rcvWnd = this.server0.window * 2 ** (wscale?.recv ?? 0);
    const sndWnd = this.client0.window * 2 ** (wscale?.send ?? 0);
    return {
      family: familyOf(this.server.address),
      local: { ...this.server },
      remote: { ...this.client },
      send: { seq: this.toClient!.seqAt(clientAcked), queue: refill, unsent: refill.length },
      recv: { seq: rcvNxt, queue: Buffer.alloc(0) },
      mss: Math.min(cs.mss ?? DEFAULT_MSS, ss.mss ?? DEFAULT_MSS),
      options: { sack: cs.sack && ss.sack, timestamps, windowScale: wscale },
      timestamp: timestamps ? seqAdd(this.server0.tsval!, Math.max(0, Math.round(nowMs - this.server0.tsvalAtMs!)) + 1) : 0,
      window: {
        sndWl1: this.client0.windowSeq,
        sndWnd,
        maxWindow: Math.max(this.client0.maxWindowBytes, sndWnd),
        rcvWnd,
        rcvWup: rcvNxt,
      },
      buffers: { send: 0, recv: 0 },
    };
  }

  /**
   * The client bytes the copy holds from `rcvNxt` (a restore's RCV.NXT) on, with its FIN if it
   * sent one after them; null when there is nothing past rcvNxt, or what is there was let go.
   */
  clientDataSince(rcvNxt: number): LateClientData | null {
    const s = this.toServer;
    if (!s) return null;
    const from = s.offsetOf(rcvNxt);
    if (from > s.next || (from === s.next && !s.finished)) return null;
    const bytes = s.bytes(from, s.next);
    if (!bytes) return null;
    return { seq: rcvNxt, bytes, fin: s.finished, window: this.client0.window, ...(this.client0.tsval !== undefined ? { tsval: this.client0.tsval } : {}) };
  }

  /** What the close engine needs to reset this connection exactly. */
  private deadConnection(nowMs: number): DeadConnection {
    const dead: DeadConnection = { local: { ...this.server }, peer: { ...this.client }, observedAt: this.lastSeenMs };
    if (!this.toServer || !this.toClient || this.client0.ack === undefined || this.server0.ack === undefined) return dead;
    const shift = this.scaleOf(false); // both SYNs were seen (the streams exist): 0 when scaling is off
    dead.tracked = {
      deadNextSeq: this.toClient.endSeq,
      peerNextSeq: this.toServer.endSeq,
      peerAck: this.client0.ack,
      deadWindow: this.server0.window,
      ...peerWindowKnowledge(this.client0.window, shift),
      ...(this.server0.tsval !== undefined ? { deadTsval: this.server0.tsval, deadTsvalAgeMs: Math.max(0, nowMs - (this.server0.tsvalAtMs ?? nowMs)) } : {}),
      ...(this.client0.tsval !== undefined ? { peerTsval: this.client0.tsval } : {}),
    };
    return dead;
  }

  private handshake(s: ParsedSegment, fromServer: boolean): void {
    const side: HandshakeSide = {
      isn: s.seq,
      ...(s.mss !== undefined ? { mss: s.mss } : {}),
      ...(s.wscale !== undefined ? { wscale: Math.min(14, s.wscale) } : {}),
      sack: s.sackPermitted === true,
      timestamps: s.tsval !== undefined,
    };
    if (fromServer) {
      if (this.serverSyn) return; // a retransmitted SYN-ACK
      this.serverSyn = side;
      this.toClient = new StreamReassembly(
        s.seq,
        this.maxRetained,
        (chunk, offset, late) => {
          this.tracker.serverData(chunk, { ms: this.segmentMs, late });
          this.followPartialReply(chunk, offset);
        },
        (_offset, length) => this.lost('server', length),
      );
    } else {
      if (this.clientSyn) return;
      this.clientSyn = side;
      this.toServer = new StreamReassembly(
        s.seq,
        this.maxRetained,
        (chunk, offset, late) => {
          const at = { ms: this.segmentMs, late };
          this.tracker.clientData(chunk, at);
          this.arrivals.add(offset + chunk.length, at, this.tracker.answeredClientBytes());
        },
        (_offset, length) => this.lost('client', length),
      );
    }
  }

  /**
   * `length` bytes of `side`'s stream that the other end holds and the capture lost: the tracker
   * follows past them or says why not (then the connection cannot be continued). Lost from a
   * reply in progress, the reply's digest lacks them (plan() resets); from a request still
   * unanswered, its replay does (plan() resets too).
   */
  private lost(side: 'server' | 'client', length: number): void {
    const t = this.tracker;
    const why =
      side === 'server'
        ? t.serverGap ? t.serverGap(length, { ms: this.segmentMs, late: true }) : 'this protocol\'s replies cannot be followed past a loss'
        : t.clientGap ? t.clientGap(length) : 'this protocol\'s requests cannot be followed past a loss';
    if (why) this.ended ??= gapReason(length, side, why);
  }

  /**
   * Keeps the digest of the reply in progress (the server bytes after the last complete reply).
   * Small replies usually end with their segment: then nothing is hashed.
   */
  private followPartialReply(chunk: Buffer, offset: number): void {
    const complete = this.tracker.completeServerBytes();
    let rest = chunk;
    if (complete > this.partialFrom) {
      this.partialFrom = complete;
      this.partialHash = null;
      rest = chunk.subarray(Math.min(chunk.length, complete - offset));
    }
    if (rest.length === 0) return;
    this.partialHash ??= new ReplyDigest();
    this.partialHash.update(rest);
  }

  /** The highest ACK one end sent, where it moves forward (old ACKs arrive late and reordered). */
  private acked(ack: number, fromServer: boolean): void {
    const sender = fromServer ? this.server0 : this.client0;
    const stream = fromServer ? this.toServer : this.toClient;
    if (!stream) return;
    if (sender.ack === undefined || stream.offsetOf(ack) > stream.offsetOf(sender.ack)) sender.ack = ack;
    // An ACK tells which bytes its sender holds: a hole below it will not fill.
    stream.acknowledged(stream.offsetOf(sender.ack), this.segmentMs);
  }

  /**
   * Lets go of what a takeover would not need: client bytes of answered requests (only the
   * unanswered ones are replayed), server bytes the client acknowledged (only the rest is refilled).
   */
  private letGo(): void {
    if (this.toServer) this.toServer.release(Math.min(this.tracker.retainClientFrom?.() ?? Infinity, this.tracker.answeredClientBytes(), this.toServer.next));
    if (this.toClient && this.client0.ack !== undefined) {
      this.toClient.release(Math.min(this.toClient.offsetOf(this.client0.ack), this.toClient.next));
    }
  }

  /** The window scale shift of the sender's window fields (0 until both SYNs offered one). */
  private scaleOf(fromServer: boolean): number {
    const cs = this.clientSyn?.wscale;
    const ss = this.serverSyn?.wscale;
    if (cs === undefined || ss === undefined) return 0;
    return fromServer ? ss : cs;
  }
}

