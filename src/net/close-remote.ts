// Ends the connections of a dead remote side: owns its address (takes it over if asked), listens
// for the peers' answers, and drives the close engine with forged segments.
import os from 'node:os';
import type { NativeError, ParsedSegment, SegmentSpec } from '../native.js';
import { takeOverAddress } from './address.js';
import { CloseEngine, type DeadConnection, type EngineOptions } from './close-engine.js';
import type { CloseMethod } from './close-method.js';
import type { CloseResult } from './close-result.js';
import { canonicalAddress, connectionKey, familyOf, isLinkLocal } from './endpoint.js';
import { SegmentForge } from './forge.js';
import { RstGuard, type GuardSweep } from './rst-guard.js';

/** Anything that delivers the segments seen on the wire (a FlowTracker does). */
export interface SegmentSource {
  onSegments(listener: (segments: ParsedSegment[]) => void): () => void;
}

export interface RemoteCloseOptions {
  connections: DeadConnection[];
  /** The dead side's addresses, when no connection may name them (takeover with no peers). */
  addresses?: string[];
  method: CloseMethod;
  /** Where the peers' answers arrive; must already be capturing. */
  answers: SegmentSource;
  /**
   * Take the dead side's address over first (add it, then gratuitous ARP / unsolicited NA), with
   * prefixLength as given (bits; nothing changes it by family).
   */
  takeover?: { interface: string; prefixLength: number; announce?: number };
  /**
   * The interface the dead addresses are on (default: the takeover's). Segments to link-local
   * peers (fe80::/10, 169.254.0.0/16) leave through it; without either, a link-local dead
   * address must be on exactly one interface of this host.
   */
  interface?: string;
  /**
   * Drop this host's own RSTs from the dead address while closing (nftables), so a FIN, break or
   * goodbye is not overtaken by the kernel resetting the peer. Default: on for those methods.
   */
  guard?: boolean;
  engine?: EngineOptions;
  /** Upper bound for the whole operation. */
  timeoutMs?: number;
}

export interface RemoteCloseReport {
  results: CloseResult[];
  /**
   * Addresses added (added: true) or found already here, usable (false), then announced;
   * `replaced` says why one found here could not serve and was removed and added again.
   */
  takeovers: Array<{ interface: string; address: string; added: boolean; replaced?: string }>;
  guard: 'installed' | 'off' | { failed: string };
  /** Guards left by processes that died before removing them, found (and the stale ones removed) while installing ours. */
  staleGuards?: GuardSweep;
  elapsedMs: number;
}

/** The interfaces holding an address on this host ([] when the address is not ours). */
export function interfacesOfAddress(address: string): string[] {
  const want = canonicalAddress(address);
  return Object.entries(os.networkInterfaces())
    .filter(([, addrs]) => addrs?.some((a) => canonicalAddress(a.address.split('%')[0]!) === want))
    .map(([name]) => name);
}

/** The (first) interface holding an address on this host, or undefined when the address is not ours. */
export function interfaceOfAddress(address: string): string | undefined {
  return interfacesOfAddress(address)[0];
}

/**
 * The one interface a link-local address is on, for what must leave through its link. Throws
 * ERR_AMBIGUOUS_INTERFACE when several interfaces hold it (each link may have its own fe80::1)
 * and ERR_ADDRESS_NOT_OWNED when none does.
 */
export function linkOfAddress(address: string): string {
  const all = interfacesOfAddress(address);
  if (all.length === 1) return all[0]!;
  if (all.length === 0) {
    throw Object.assign(new Error(`${address} is not an address of this host: name its interface or take it over`), { code: 'ERR_ADDRESS_NOT_OWNED' });
  }
  throw Object.assign(new Error(`${address} is link-local and on ${all.join(', ')}: name the interface its peers are on`), { code: 'ERR_AMBIGUOUS_INTERFACE' });
}

/** Segments sent per turn of the event loop. */
export const SEND_BATCH = 128;

/**
 * The forged segments, paced: SEND_BATCH per turn of the event loop, so that a burst for
 * thousands of connections neither overflows a queue on the way (a veth peer's backlog holds
 * net.core.netdev_max_backlog = 1000 packets; a NIC's queue answers ENOBUFS) nor holds the
 * event loop that sends heartbeats. A full device queue (ENOBUFS, EAGAIN) is not an error:
 * the same segment goes again 1 ms later. Any other send error is kept for the caller.
 */
class Outbox {
  private queue: SegmentSpec[] = [];
  private head = 0;
  private scheduled = false;
  private closed = false;
  error: Error | undefined;

  constructor(
    private readonly sendNow: (spec: SegmentSpec) => void,
    private readonly onError: () => void,
  ) {}

  push(spec: SegmentSpec): void {
    this.queue.push(spec);
    this.schedule(0);
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  /** The segments still queued. */
  unsent(): SegmentSpec[] {
    return this.queue.slice(this.head);
  }

  /** Resolves once every queued segment is sent (or on an error, or after maxMs). */
  async drained(maxMs: number): Promise<void> {
    const end = performance.now() + maxMs;
    while (this.pending > 0 && !this.error && performance.now() < end) await new Promise((r) => setTimeout(r, 1));
  }

  close(): void {
    this.closed = true;
  }

  private schedule(delayMs: number): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    if (delayMs > 0) setTimeout(this.pump, delayMs);
    else setImmediate(this.pump);
  }

  private readonly pump = (): void => {
    this.scheduled = false;
    if (this.closed) return;
    for (let n = 0; n < SEND_BATCH && this.head < this.queue.length; n++) {
      try {
        this.sendNow(this.queue[this.head]!);
      } catch (err) {
        const code = (err as NativeError).code;
        if (code === 'ENOBUFS' || code === 'EAGAIN') return this.schedule(1);
        this.error ??= err as Error;
        this.onError();
      }
      this.head++;
    }
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else {
      this.schedule(0);
    }
  };
}

export async function closeRemotePeers(options: RemoteCloseOptions): Promise<RemoteCloseReport> {
  const started = performance.now();
  const { connections, method } = options;
  const deadAddresses = [...new Set([...(options.addresses ?? []).map(canonicalAddress), ...connections.map((c) => c.local.address)])];
  const report: RemoteCloseReport = { results: [], takeovers: [], guard: 'off', elapsedMs: 0 };

  const taken = new Set<string>();
  if (options.takeover) {
    for (const address of deadAddresses) {
      // The prefix as given (the callers check it: the agent's config, the CLI's --prefix-length).
      const r = await takeOverAddress(options.takeover.interface, address, options.takeover.prefixLength, { announce: options.takeover.announce ?? 3 });
      report.takeovers.push({ interface: options.takeover.interface, address, added: r.added, ...(r.replaced ? { replaced: r.replaced } : {}) });
      taken.add(address);
    }
  }
  if (connections.length === 0) return report;
  for (const address of deadAddresses) {
    if (!taken.has(address) && !interfaceOfAddress(address)) {
      throw Object.assign(
        new Error(`${address} is not an address of this host: the peers' answers would not reach us (take it over first)`),
        { code: 'ERR_ADDRESS_NOT_OWNED' },
      );
    }
  }

  // Segments to link-local peers must leave through the dead address's link: the routing table
  // would send them out of any interface with a link-local route.
  const link = options.takeover?.interface ?? options.interface ?? linkLocalLink(deadAddresses);
  let guard: RstGuard | undefined;
  if (options.guard ?? method.kind !== 'rst') {
    try {
      guard = await RstGuard.install(deadAddresses);
      report.guard = 'installed';
      if (guard.swept.removed.length > 0 || guard.swept.foreign.length > 0) report.staleGuards = guard.swept;
    } catch (err) {
      report.guard = { failed: (err as Error).message };
    }
  }

  const forges = new Map<4 | 6, SegmentForge>();
  const forgeFor = (family: 4 | 6) => {
    let f = forges.get(family);
    if (!f) forges.set(family, (f = new SegmentForge(family, link === undefined ? {} : { interface: link })));
    return f;
  };
  // Answers arrive through the capture's uv_poll callback; the engine reacts to each at once,
  // and this loop only wakes for the engine's timers, when the last connection is done, or on
  // a send error.
  let wake: () => void = () => {};
  const outbox = new Outbox((spec) => forgeFor(familyOf(spec.src)).send(spec), () => wake());
  const engine = new CloseEngine(connections, method, {
    now: () => performance.now(),
    send: (spec) => outbox.push(spec),
  }, options.engine);
  const unsubscribe = options.answers.onSegments((segments) => {
    for (const s of segments) engine.answer(s);
    if (engine.done) wake();
  });
  try {
    engine.start();
    const deadline = performance.now() + (options.timeoutMs ?? 5000);
    while (!engine.done && performance.now() < deadline) {
      if (outbox.error) throw outbox.error;
      if (engine.beginning) {
        // The next slice of connections after one turn of the loop (heartbeats, answers).
        await new Promise((r) => setImmediate(r));
      } else {
        const wait = Math.max(1, Math.min(deadline, engine.nextDeadline()) - performance.now());
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      engine.tick();
    }
    // A connection is done once its last segment is queued (an exact RST learned from the
    // peer needs no answer): what is queued still goes out.
    await outbox.drained(Math.max(0, deadline - performance.now()));
    if (outbox.error) throw outbox.error;
  } finally {
    unsubscribe();
    outbox.close();
    for (const f of forges.values()) f.close();
    if (guard) await guard.remove();
  }
  report.results = failUnsent(engine.results(), outbox.unsent());
  report.elapsedMs = Math.round((performance.now() - started) * 1000) / 1000;
  return report;
}

/** The link of the first link-local address among addresses (throws as linkOfAddress), else undefined. */
function linkLocalLink(addresses: string[]): string | undefined {
  const local = addresses.find(isLinkLocal);
  return local === undefined ? undefined : linkOfAddress(local);
}

/**
 * A connection the engine finished once its closing segment was queued, but whose segment was
 * still queued at the deadline (the host could not send fast enough), was not closed: it fails.
 * (Exported for its unit test.)
 */
export function failUnsent(results: CloseResult[], unsent: SegmentSpec[]): CloseResult[] {
  if (unsent.length === 0) return results;
  const keys = new Set(unsent.map((s) => connectionKey({ address: s.src, port: s.sport }, { address: s.dst, port: s.dport })));
  return results.map((r) =>
    r.ok && keys.has(connectionKey(r.local, r.peer))
      ? { ...r, outcome: 'failed', ok: false, verified: false, error: 'its closing segment was still queued at the deadline: not sent' }
      : r,
  );
}
