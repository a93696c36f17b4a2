// The backup's end of a segment stream (issue 12's second source): a ShadowTable fed by the
// primary's own capture, streamed over TCP (segment-stream-source.ts, segment-wire.ts), for
// networks where no port mirror shows the backup the primary's traffic. The same surface as
// ShadowCapture: `table`, plans(address), stats(), close().
//
// What the copy is worth:
// - A MARK says every segment the primary captured up to its time T has been sent before it:
//   `lastMarkMs` is the capture time up to which this copy is complete (the window a takeover
//   must state: segments captured after it, up to the primary's death, may be missing).
// - A LOSS (the primary's capture dropped frames) makes every open connection's end unproven
//   (its client must show it at a takeover: TailProof) until both its ends have shown their
//   streams whole again (ShadowTable.captureLost).
// - A stream that ends or breaks (the primary died, the link broke, the primary cut a backup
//   that fell 64 MiB behind) loses whatever the primary captured meanwhile. By default
//   ('on-resume') the open connections are marked unproven when the stream comes back (the
//   primary lived on and the gap is real), not when it breaks: a primary that died leaves a copy
//   complete up to lastMarkMs, and its connections can be continued from it. With 'at-break'
//   they are marked at once. Either way a takeover proves every connection's end with its client
//   (the copy from a stream always lags the wire), so the policy only shapes the plans' reasons.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { mapInSlices } from '../../event-loop.js';
import type { ParsedSegment } from '../../native.js';
import type { Endpoint } from '../endpoint.js';
import type { ContinuePlan } from './shadow-connection.js';
import { ShadowTable, type ShadowStats, type ShadowTableOptions } from './shadow-table.js';
import { checkSegmentKey, checkStreamServices, encodeSegmentFrame, MAX_NODE_BYTES, SegmentFrameReader, type SegmentMessage, type WelcomeRefusal } from './segment-wire.js';

export interface PeerShadowOptions extends ShadowTableOptions {
  /** This backup's node name (1..64 bytes), told to the primary in the HELLO. */
  node: string;
  /** The shared key (16 bytes at least). */
  key: Buffer;
  /** The primary's segment stream source. */
  primary: { host: string; port: number };
  /** Waits between dials after a failure, ms: doubling from min to max; default 100..5,000. */
  reconnect?: { minMs?: number; maxMs?: number };
  /** A stream silent this long (the primary MARKs every 25 ms) is taken as broken, ms; default 2,000. */
  idleTimeoutMs?: number;
  /** When a break makes the open connections unprovable (see above); default 'on-resume'. */
  breakPolicy?: 'on-resume' | 'at-break';
  /** How often ended connections are swept, ms; default 100. */
  checkIntervalMs?: number;
  /** Told of the stream's ups and downs (for logs). */
  onEvent?: (event: PeerShadowEvent) => void;
}

export type PeerShadowEvent =
  | { type: 'connected'; primary: string }
  | { type: 'refused'; primary: string; refusal: WelcomeRefusal; reason: string }
  | { type: 'broken'; reason: string; lastMarkMs: number }
  | { type: 'resumed'; downSinceMarkMs: number; suspected: number };

export interface PeerShadowStats extends ShadowStats {
  /** Frames the primary's capture reported lost (LOSS). */
  captureDrops: number;
  /** Whether a stream is up (WELCOME taken). */
  connected: boolean;
  /** Streams that ended or broke after their WELCOME. */
  breaks: number;
  /** Dials that failed before a WELCOME (refused, unreachable, wrong key). */
  failedDials: number;
  /** Now minus the newest capture time received (a segment's or a MARK's), ms; the clocks of both hosts are in it. */
  lagMs: number;
  /** Capture time up to which the copy is complete, by the last MARK (ms since the epoch; 0 before one). */
  lastMarkMs: number;
  bytesReceived: number;
  segmentsReceived: number;
  /** Why the last stream or dial ended, or null. */
  lastError: string | null;
}

interface Stream {
  socket: net.Socket;
  reader: SegmentFrameReader;
  nonce: bigint;
  /** The primary's nonce, from its WELCOME (0 before). */
  primaryNonce: bigint;
  seqOut: bigint;
  welcomed: boolean;
  lastSeq: bigint;
  lastFrameAt: number;
  gone: boolean;
}

function randomNonce(): bigint {
  for (;;) {
    const v = randomBytes(8).readBigUInt64BE(0);
    if (v !== 0n) return v;
  }
}

export class PeerShadow implements Disposable {
  readonly table: ShadowTable;
  private readonly services: Endpoint[];
  private readonly minMs: number;
  private readonly maxMs: number;
  private readonly idleTimeoutMs: number;
  private readonly timer: NodeJS.Timeout;
  private stream: Stream | null = null;
  private retry: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;
  /** The stream broke after a WELCOME: the open connections are suspected when it resumes. */
  private gap = false;
  private markMs = 0;
  private newestMs = 0;
  private counters = { captureDrops: 0, breaks: 0, failedDials: 0, bytesReceived: 0, segmentsReceived: 0 };
  private lastError: string | null = null;

  /** Dials at once. Throws TypeError/RangeError on a bad key, node name or services (1..16). */
  constructor(private readonly options: PeerShadowOptions) {
    checkSegmentKey(options.key);
    const nodeBytes = Buffer.byteLength(options.node);
    if (nodeBytes === 0 || nodeBytes > MAX_NODE_BYTES) throw new RangeError(`node must be 1..${MAX_NODE_BYTES} bytes: ${JSON.stringify(options.node)}`);
    checkStreamServices(options.services);
    this.services = options.services.map((s) => ({ address: s.address, port: s.port }));
    this.table = new ShadowTable(options);
    this.minMs = options.reconnect?.minMs ?? 100;
    this.maxMs = options.reconnect?.maxMs ?? 5000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 2000;
    this.timer = setInterval(() => this.check(), options.checkIntervalMs ?? 100);
    this.timer.unref();
    this.dial();
  }

  /** Capture time up to which this copy is complete, by the primary's last MARK (ms since the epoch; 0 before one). */
  get lastMarkMs(): number {
    return this.markMs;
  }

  /** Whether a stream is up. */
  get connected(): boolean {
    return this.stream?.welcomed === true && !this.stream.gone;
  }

  /**
   * The plans for one service address (all when absent), from the copy as it stands: call it
   * once the primary is silent (fenced). Complete up to lastMarkMs. Made in ~2 ms slices.
   */
  plans(address?: string): Promise<ContinuePlan[]> {
    this.table.sweep(Date.now());
    return mapInSlices(this.table.shadows(address), (c) => c.plan(Date.now()));
  }

  stats(): PeerShadowStats {
    const newest = Math.max(this.newestMs, this.markMs);
    return {
      ...this.table.stats(),
      ...this.counters,
      connected: this.connected,
      lagMs: newest === 0 ? 0 : Math.max(0, Date.now() - newest),
      lastMarkMs: this.markMs,
      lastError: this.lastError,
    };
  }

  /** Stops dialling and closes the stream; the table stays readable. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    if (this.stream) this.drop(this.stream, 'the peer shadow is closing');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private dial(): void {
    if (this.closed) return;
    this.retry = null;
    const nonce = randomNonce();
    const socket = net.connect({ host: this.options.primary.host, port: this.options.primary.port });
    socket.setNoDelay(true);
    const st: Stream = { socket, reader: new SegmentFrameReader({ role: 'backup', nonce }, { key: this.options.key }), nonce, primaryNonce: 0n, seqOut: 0n, welcomed: false, lastSeq: 0n, lastFrameAt: performance.now(), gone: false };
    this.stream = st;
    socket.on('connect', () => {
      st.lastFrameAt = performance.now();
      this.send(st, { type: 'hello', node: this.options.node, services: this.services });
    });
    socket.on('data', (chunk: Buffer) => this.onData(st, chunk));
    socket.on('end', () => {
      const cut = st.reader.finish();
      this.drop(st, cut && !cut.ok ? `the stream ended inside a frame (${cut.detail})` : 'the primary ended the stream');
    });
    socket.on('error', (err) => this.drop(st, `the stream failed: ${err.message}`));
    socket.on('close', () => this.drop(st, 'the stream closed'));
  }

  private onData(st: Stream, chunk: Buffer): void {
    if (st.gone) return;
    this.counters.bytesReceived += chunk.length;
    st.lastFrameAt = performance.now();
    let segments = false;
    for (const r of st.reader.push(chunk)) {
      if (!r.ok) {
        this.drop(st, `bad frame from the primary (${r.reason}): ${r.detail}`);
        return;
      }
      st.lastSeq = r.frame.seq;
      const m = r.frame.message;
      switch (m.type) {
        case 'welcome':
          if (m.refusal !== null) {
            this.options.onEvent?.({ type: 'refused', primary: m.node, refusal: m.refusal, reason: m.reason });
            this.drop(st, `the primary ${m.node} refused (${m.refusal}): ${m.reason}`);
            return;
          }
          st.primaryNonce = r.frame.primaryNonce;
          this.welcomed(st, m.node);
          break;
        case 'segments':
          this.take(m.segments);
          segments = true;
          break;
        case 'loss':
          this.counters.captureDrops += m.frames;
          this.table.captureLost(m.frames, m.timeMs);
          break;
        case 'mark':
          if (m.timeMs > this.markMs) this.markMs = m.timeMs;
          this.ack(st);
          segments = false;
          break;
        default:
          break; // the reader lets nothing else through
      }
    }
    // One ACK for what this chunk brought (it names the last frame taken).
    if (segments) this.ack(st);
  }

  private welcomed(st: Stream, primary: string): void {
    st.welcomed = true;
    this.attempt = 0;
    this.lastError = null;
    this.ack(st); // proves this end holds the key: the primary streams only after it
    this.options.onEvent?.({ type: 'connected', primary });
    if (this.gap) {
      // The primary lived on while the stream was down: what it captured meanwhile is lost.
      this.gap = false;
      const open = this.table.shadows();
      const since = this.markMs === 0 ? 'before its first MARK' : `after capture time ${new Date(this.markMs).toISOString()}`;
      for (const c of open) c.suspect(`the segment stream from the primary was down ${since} (what it captured meanwhile is not in the copy)`);
      this.options.onEvent?.({ type: 'resumed', downSinceMarkMs: this.markMs, suspected: open.length });
    }
  }

  private take(segments: ParsedSegment[]): void {
    this.counters.segmentsReceived += segments.length;
    const last = segments.at(-1)?.timeMs;
    if (last !== undefined && last > this.newestMs) this.newestMs = last;
    this.table.segments(segments, Date.now());
  }

  private ack(st: Stream): void {
    this.send(st, { type: 'ack', frameSeq: st.lastSeq, markMs: this.markMs });
  }

  private send(st: Stream, message: SegmentMessage): void {
    if (st.gone) return;
    st.socket.write(encodeSegmentFrame({ backupNonce: st.nonce, primaryNonce: st.primaryNonce, seq: st.seqOut++, message }, this.options.key));
  }

  /** Ends a stream (once) and schedules the next dial. */
  private drop(st: Stream, reason: string): void {
    if (st.gone) return;
    st.gone = true;
    st.socket.destroy();
    if (this.stream === st) this.stream = null;
    this.lastError = reason;
    if (st.welcomed) {
      this.counters.breaks++;
      this.gap = true;
      if (this.options.breakPolicy === 'at-break') {
        for (const c of this.table.shadows()) c.suspect(`the segment stream from the primary broke (${reason}) after capture time ${new Date(this.markMs).toISOString()}`);
      }
      // Not when this shadow is closed by its owner (a takeover took its plans): not a fault.
      if (!this.closed) this.options.onEvent?.({ type: 'broken', reason, lastMarkMs: this.markMs });
    } else {
      this.counters.failedDials++;
    }
    if (this.closed) return;
    const wait = st.welcomed ? this.minMs : Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt++, 20));
    this.retry = setTimeout(() => this.dial(), wait);
    this.retry.unref();
  }

  private check(): void {
    const st = this.stream;
    if (st && !st.gone && performance.now() - st.lastFrameAt > this.idleTimeoutMs) this.drop(st, `nothing from the primary for ${this.idleTimeoutMs} ms`);
    this.table.sweep(Date.now());
  }
}
