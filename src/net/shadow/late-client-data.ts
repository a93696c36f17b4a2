// Client segments that reach the dead server between the plans and the address move (issue 12's
// "re-inject client segments that arrived in between"): a port mirror still copies them to the
// backup, but the restored socket never gets them, and the client sends them again only when
// its retransmission timer fires (200 ms at least, then 400, 800...). The backup delivers them
// itself: the bytes its copy holds past each restored socket's RCV.NXT, as segments from the
// client's address to the (now local) service address on a header-included raw socket. The
// route to a local address is loopback, so rp_filter does not look at the client's source;
// the restored socket takes them in order like any segment of its connection. Their ACK is the
// restored SND.UNA (never beyond SND.NXT), their TSval the client's last. Bytes the socket has
// already (the client's own retransmission came first) are dropped by TCP as duplicates.
import { TCP_ACK, TCP_FIN, TCP_PSH } from '../../native.js';
import { familyOf, type Endpoint } from '../endpoint.js';
import { SegmentForge } from '../forge.js';
import { seqAdd } from '../seq.js';
import { restoredRcvNxt, type TcpRepairState } from '../tcp-repair-state.js';
import type { LateClientData } from './shadow-connection.js';

/** Where the copy's late client bytes come from (ShadowCapture.clientDataSince). */
export type LateClientSource = (client: Endpoint, server: Endpoint, rcvNxt: number) => LateClientData | null;

/**
 * When the copy is looked at again after a connection starts relaying, ms. A mirror hands
 * frames over up to its ring's block timeout (10 ms) late, and clients keep sending to the dead
 * server's MAC until the address's gratuitous ARP reaches them.
 */
export const LATE_LOOKS_MS = [0, 20, 60] as const;
/** Bytes per delivered segment (loopback's MTU is 64 KiB). */
const SEGMENT_BYTES = 32 * 1024;

/** One restored connection whose late client bytes are delivered. */
interface Watched {
  client: Endpoint;
  server: Endpoint;
  state: TcpRepairState;
  /** The sequence number after the last byte (or FIN) delivered. */
  next: number;
  /** Client bytes delivered so far (a FIN not counted). */
  bytes: number;
}

export class LateClientDelivery {
  private forge: SegmentForge | undefined;
  private readonly watched = new Map<string, Watched>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private pending = 0;
  /** done()'s waiters, resolved when no look is pending. */
  private waiters: Array<() => void> = [];
  private closed = false;
  /**
   * Looks whose send failed (the kernel refused a segment: ENOBUFS...): what they did not
   * deliver is sent again at the next look, or comes with the client's retransmission.
   */
  private failures = 0;

  constructor(private readonly source: LateClientSource) {}

  /**
   * Delivers to a restored connection (its socket out of repair mode, the service address local)
   * what the copy holds past its RCV.NXT: at each of LATE_LOOKS_MS from now.
   */
  watch(client: Endpoint, server: Endpoint, state: TcpRepairState): void {
    const w: Watched = { client, server, state, next: restoredRcvNxt(state), bytes: 0 };
    this.watched.set(key(client, server), w);
    for (const ms of LATE_LOOKS_MS) {
      this.pending++;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.look(w);
        if (--this.pending === 0) this.settle();
      }, ms);
      this.timers.add(timer);
    }
  }

  /** Resolves after the last look of every connection watched so far. */
  done(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Client bytes delivered to one connection so far (0: none, or not watched). */
  delivered(client: Endpoint, server: Endpoint): number {
    return this.watched.get(key(client, server))?.bytes ?? 0;
  }

  /** Connections that got late bytes (or a FIN), the bytes in all, and the looks whose send failed. */
  totals(): { connections: number; bytes: number; failures: number } {
    let connections = 0;
    let bytes = 0;
    for (const w of this.watched.values()) {
      if (w.next === restoredRcvNxt(w.state)) continue;
      connections++;
      bytes += w.bytes;
    }
    return { connections, bytes, failures: this.failures };
  }

  /** Stops looking; idempotent. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.pending = 0;
    this.settle();
    this.forge?.close();
    this.forge = undefined;
  }

  private settle(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  private look(w: Watched): void {
    if (this.closed) return;
    const late = this.source(w.client, w.server, w.next);
    if (!late) return;
    try {
      this.forge ??= new SegmentForge(familyOf(w.server.address));
      const count = Math.max(1, Math.ceil(late.bytes.length / SEGMENT_BYTES));
      for (let i = 0; i < count; i++) {
        const payload = late.bytes.subarray(i * SEGMENT_BYTES, (i + 1) * SEGMENT_BYTES);
        const fin = late.fin && i === count - 1;
        this.forge.send({
          src: w.client.address,
          dst: w.server.address,
          sport: w.client.port,
          dport: w.server.port,
          seq: seqAdd(late.seq, i * SEGMENT_BYTES),
          ack: w.state.send.seq,
          flags: TCP_ACK | (payload.length > 0 ? TCP_PSH : 0) | (fin ? TCP_FIN : 0),
          window: late.window,
          payload,
          ...(w.state.options.timestamps && late.tsval !== undefined ? { tsval: late.tsval, tsecr: w.state.timestamp } : {}),
        });
      }
      w.bytes += late.bytes.length;
      w.next = seqAdd(late.seq, late.bytes.length + (late.fin ? 1 : 0));
    } catch {
      // The segment is the client's to send again (its retransmission timer); nothing is lost.
      this.failures++;
    }
  }
}

function key(client: Endpoint, server: Endpoint): string {
  return `${client.address}|${client.port}>${server.address}|${server.port}`;
}
