// Forged TCP segments. The addon builds and sends the bytes; what to send (which flags, which
// sequence numbers) is decided by the callers (the close engine).
import { native, type NativeRawSender, type SegmentSpec } from '../native.js';

export type { SegmentSpec } from '../native.js';

/** fwmark the addon puts on every forged packet, so netfilter rules can recognise them. */
export const FORGE_MARK = 0x7a6b;

/**
 * The complete IPv4 or IPv6 packet (IP header, TCP header with optional timestamp option,
 * payload, both checksums) that SegmentForge.send would put on the wire for spec.
 * Throws TypeError (code ERR_INVALID_ARG_VALUE, message naming the field) on a bad spec.
 */
export function buildSegment(spec: SegmentSpec): Buffer {
  return native.buildSegment(spec);
}

export interface SegmentForgeOptions {
  /**
   * The interface of the link that link-local destinations (fe80::/10, 169.254.0.0/16) are on:
   * such segments leave through it, whatever the routing table would pick (every interface has
   * a route for them). Other destinations follow the routing table.
   */
  interface?: string;
}

/**
 * A header-included raw socket of one family (needs CAP_NET_RAW, and CAP_NET_ADMIN for the
 * mark). Sends are synchronous: one sendmsg on a raw socket only queues the packet.
 * Throws ENODEV for an unknown interface.
 */
export class SegmentForge implements Disposable {
  readonly family: 4 | 6;
  private sender: NativeRawSender | undefined;

  constructor(family: 4 | 6, options: SegmentForgeOptions = {}) {
    this.family = family;
    this.sender = new native.RawSender(family, options.interface);
  }

  /**
   * Sends one segment whose src/dst are of this forge's family; returns the bytes written.
   * Throws TypeError (ERR_INVALID_ARG_VALUE) for a bad spec, or for a link-local destination
   * when the forge was made without an interface; a NativeError (syscall 'sendmsg') when the
   * kernel refuses (ENOBUFS: the device queue is full).
   */
  send(spec: SegmentSpec): number {
    if (!this.sender) throw new Error('SegmentForge is closed');
    return this.sender.send(spec);
  }

  /** Releases the socket; idempotent. */
  close(): void {
    this.sender?.close();
    this.sender = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
