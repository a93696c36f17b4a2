// FlowTracker: the capture ring and flow table of the addon, with a filter built from hosts and
// ports, and segment listeners. While no listener is registered the addon builds no JS objects
// per packet: tracking alone stays in C++.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { native, type CaptureStats, type FlowRecord, type FlowSide, type FlowState, type NativeCapture, type ParsedSegment, type RawFlows } from '../native.js';
import { buildTcpFilter } from './bpf-filter.js';
import { FORGE_MARK } from './forge.js';
import type { SegmentSource } from './close-remote.js';
import { canonicalAddress, type Endpoint } from './endpoint.js';

export interface FlowTrackerOptions {
  /** The interface to capture on, or 'any' for every interface of the namespace. */
  interface: string;
  /** Only segments to or from these addresses (at most 8). */
  hosts?: string[];
  /** Only segments to or from these ports (at most 16). */
  ports?: number[];
  /** Payload bytes per segment handed to listeners (0 = headers only, the default). */
  payloadBytes?: number;
  idleTimeoutMs?: number;
  /**
   * The ring: blocks of blockSize bytes (default 1 MiB), blockCount of them (8), each handed
   * over when full or blockTimeoutMs (2) after its first packet. A reader kept busy for
   * blockCount × blockTimeoutMs loses packets however empty the blocks are.
   */
  blockSize?: number;
  blockCount?: number;
  blockTimeoutMs?: number;
  /**
   * 'block' (default): a ring handed over per block, up to 2 ms after the packet. 'packet': a
   * wake-up per packet, for a tracker that must act on a segment at once (an agent telling its
   * peers about a new connection before it may die).
   */
  wakeup?: 'block' | 'packet';
  /** Hand listeners only segments with one of these flags (e.g. TCP_SYN | TCP_FIN | TCP_RST), plus data when payloadBytes > 0. */
  deliverFlags?: number;
  /** Let only segments with one of these flags into the socket at all (a BPF test in the kernel). */
  flagsAny?: number;
  /** false: keep no flow table (segments are only handed to listeners). */
  trackFlows?: boolean;
  /**
   * true: the ring is set up on a libuv worker (see `ready`) rather than in the constructor,
   * which holds the event loop for a kernel RCU grace period (7-44 ms measured, more under load). For
   * what opens captures while the agent sends heartbeats. ('packet' wake-ups have no ring: they
   * open at once either way.)
   */
  background?: boolean;
}

/** What a capture lets through: hosts, ports and how much payload. */
export type CaptureScope = Pick<FlowTrackerOptions, 'hosts' | 'ports' | 'payloadBytes'>;

export interface FoundFlow {
  flow: FlowRecord;
  local: FlowSide;
  remote: FlowSide;
}

export class FlowTracker implements SegmentSource, Disposable {
  private readonly capture: NativeCapture;
  private readonly listeners = new Set<(segments: ParsedSegment[]) => void>();
  private started = false;
  private closed = false;
  /**
   * Resolves once frames are captured: at once, or for a background ring when it is set up.
   * Rejects with the error that kept the ring from being set up (ENOMEM; code, errno, syscall),
   * the tracker then hearing nothing. Handled already: awaiting it is optional.
   */
  readonly ready: Promise<void>;
  private released: Promise<void> = Promise.resolve();

  constructor(readonly options: FlowTrackerOptions) {
    this.capture = new native.Capture({
      interface: options.interface,
      filter: this.filterFor(options),
      payloadBytes: options.payloadBytes ?? 0,
      ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      ...(options.blockSize ? { blockSize: options.blockSize } : {}),
      ...(options.blockCount ? { blockCount: options.blockCount } : {}),
      ...(options.blockTimeoutMs ? { blockTimeoutMs: options.blockTimeoutMs } : {}),
      ...(options.wakeup ? { wakeup: options.wakeup } : {}),
      ...(options.deliverFlags !== undefined ? { deliverFlags: options.deliverFlags } : {}),
      ...(options.trackFlows === false ? { trackFlows: false } : {}),
      ...(options.background ? { background: true } : {}),
    });
    this.ready = this.capture.open();
    this.ready.catch(() => {}); // reported to whoever awaits it, and in stats()
  }

  /**
   * Changes what is captured (hosts, ports, payload) on the live socket: flows already tracked
   * keep their state. Throws like the constructor on a bad host or port.
   */
  setScope(scope: CaptureScope): void {
    if (this.closed) throw new Error('FlowTracker is closed');
    this.capture.setFilter(this.filterFor(scope), scope.payloadBytes ?? 0);
  }

  private filterFor(scope: CaptureScope): Buffer {
    const payloadBytes = scope.payloadBytes ?? 0;
    for (const h of scope.hosts ?? []) if (net.isIP(h) === 0) throw new TypeError(`FlowTracker: bad host ${h}`);
    return buildTcpFilter({
      ...(scope.hosts ? { hosts: scope.hosts } : {}),
      ...(scope.ports ? { ports: scope.ports } : {}),
      // Headers fit in 256 bytes; payload only as far as asked for.
      snapLength: payloadBytes > 0 ? Math.min(0x40000, 256 + payloadBytes) : 256,
      linkHeaderLength: isRawIpInterface(this.options.interface) ? 0 : 14,
      // Our own forged segments say nothing new about a flow and would only load the ring
      // while a thousand connections are being closed.
      excludeMark: FORGE_MARK,
      ...(this.options.flagsAny !== undefined ? { flagsAny: this.options.flagsAny } : {}),
    });
  }

  /** Starts reading the ring on the event loop. Keeps the process alive until close(). */
  start(): void {
    if (this.closed) throw new Error('FlowTracker is closed');
    if (this.started) return;
    this.started = true;
    this.capture.start((segments) => {
      for (const l of [...this.listeners]) l(segments);
    });
    this.capture.setDeliver(this.listeners.size > 0);
  }

  /** Registers a listener for every batch of captured segments; returns its removal. */
  onSegments(listener: (segments: ParsedSegment[]) => void): () => void {
    this.listeners.add(listener);
    this.capture.setDeliver(true);
    return () => {
      this.listeners.delete(listener);
      if (!this.closed) this.capture.setDeliver(this.listeners.size > 0);
    };
  }

  flows(): FlowRecord[] {
    return this.closed ? [] : decodeFlows(this.capture.flows());
  }

  /**
   * The flows updated after `generation` (0: all), and the generation to ask from next time.
   * Generations count segments as the table takes them, so a segment handed over late by the
   * ring is never missed (a capture timestamp would be older than the last poll).
   */
  changedFlows(generation: number): { flows: FlowRecord[]; generation: number } {
    if (this.closed) return { flows: [], generation };
    const raw = this.capture.flows(generation);
    return { flows: decodeFlows(raw), generation: raw.generation };
  }

  /** The flow between local and remote (one lookup in the table), with its sides named from local's point of view. */
  findFlow(local: Endpoint, remote: Endpoint): FoundFlow | undefined {
    if (this.closed) return undefined;
    const [flow] = decodeFlows(this.capture.find(local.address, local.port, remote.address, remote.port));
    if (!flow) return undefined;
    const l = canonicalAddress(local.address);
    return flow.a.address === l && flow.a.port === local.port ? { flow, local: flow.a, remote: flow.b } : { flow, local: flow.b, remote: flow.a };
  }

  stats(): CaptureStats {
    return this.capture.stats();
  }

  /**
   * Stops capturing at once and frees the ring and socket on a libuv worker (closing waits for a
   * kernel RCU grace period); idempotent. `whenReleased()` tells when the socket is closed.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.released = this.capture.close();
  }

  /** Resolves once a closed tracker's socket is closed and its ring unmapped (at once before close()). */
  whenReleased(): Promise<void> {
    return this.released;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * tun-style interfaces carry bare IP packets, and so does 'any' (read from the IP header);
 * everything else here has an Ethernet header.
 */
function isRawIpInterface(ifname: string): boolean {
  if (ifname === 'any') return true;
  try {
    // ARPHRD_NONE (65534) is what tun devices report.
    return Number(readFileSync(`/sys/class/net/${ifname}/type`, 'utf8').trim()) === 65534;
  } catch {
    return false; // the addon reports an unknown interface with ENODEV
  }
}

// Layout of RawFlows.numbers (native/packet_capture.cc, Flows()): per flow FLOW_FIELDS numbers,
// five for the flow, then SIDE_FIELDS for side a and SIDE_FIELDS for side b.
const SIDE_FIELDS = 13;
const FLOW_FIELDS = 5 + 2 * SIDE_FIELDS;
// The order of native FlowState.
const STATES: FlowState[] = ['SYN_SENT', 'SYN_RECEIVED', 'ESTABLISHED', 'FIN_WAIT', 'CLOSING', 'CLOSED', 'RESET'];

function decodeSide(n: Float64Array, o: number, address: string): FlowSide {
  return {
    address,
    port: n[o]!,
    nextSeq: n[o + 1]!,
    ack: n[o + 2]!,
    window: n[o + 3]!,
    wscale: n[o + 4]!,
    mss: n[o + 5]!,
    sackPermitted: n[o + 6] === 1,
    tsval: n[o + 7]!,
    tsecr: n[o + 8]!,
    finSent: n[o + 9] === 1,
    lastSeenMs: n[o + 10]!,
    packets: n[o + 11]!,
    bytes: n[o + 12]!,
  };
}

export function decodeFlows(raw: RawFlows): FlowRecord[] {
  const out: FlowRecord[] = new Array(raw.count);
  const n = raw.numbers;
  for (let i = 0; i < raw.count; i++) {
    const o = i * FLOW_FIELDS;
    out[i] = {
      family: n[o] as 4 | 6,
      state: STATES[n[o + 1]!]!,
      handshakeSeen: n[o + 2] === 1,
      firstSeenMs: n[o + 3]!,
      lastSeenMs: n[o + 4]!,
      a: decodeSide(n, o + 5, raw.addresses[2 * i]!),
      b: decodeSide(n, o + 5 + SIDE_FIELDS, raw.addresses[2 * i + 1]!),
    };
  }
  return out;
}
