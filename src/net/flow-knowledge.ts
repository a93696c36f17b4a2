// Turns tracked flows (live or from a snapshot file) into what the close engine needs to know
// about each connection of a dead side.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { FlowRecord, FlowSide } from '../native.js';
import { windowBytes, type DeadConnection, type TrackedState } from './close-engine.js';
import type { BoundaryState } from './boundary-watch.js';
import { canonicalAddress, canonicalConnectionKey, canonicalizer, type Endpoint } from './endpoint.js';

export interface DeadSide {
  address: string;
  /** When absent, every connection of the address counts. */
  port?: number;
}

// Flow addresses come from the addon's inet_ntop, already in canonical form (as does a
// snapshot file written from them): only the dead side's address needs canonicalising.
function isDeadSide(side: FlowSide, deadAddress: string, deadPort: number | undefined): boolean {
  return side.address === deadAddress && (deadPort === undefined || side.port === deadPort);
}

/** The raw 16-bit window field a side would put on the wire for its last advertised window. */
export function rawWindow(side: FlowSide): number {
  const shifted = side.wscale > 0 ? side.window >>> side.wscale : side.window;
  return Math.min(0xffff, Math.max(0, shifted));
}

/**
 * The peer's receive window for the close engine, from a raw window field and the peer's window
 * scale shift when known (undefined: the handshake was not seen).
 */
export function peerWindowKnowledge(raw: number, shift: number | undefined): Pick<TrackedState, 'peerWindow' | 'peerWindowShift'> {
  const bytes = windowBytes(raw, shift);
  return { ...(bytes !== undefined ? { peerWindow: bytes } : {}), ...(shift !== undefined ? { peerWindowShift: shift } : {}) };
}

/**
 * What tracking saw of a connection, from the flow's dead (server) side and peer side; `nowMs`
 * (ms since the epoch) ages the dead side's TSval for the close engine.
 */
export function trackedFromSides(d: FlowSide, p: FlowSide, nowMs?: number): TrackedState & { deadWindow: number } {
  return {
    deadNextSeq: d.nextSeq,
    peerNextSeq: p.nextSeq,
    peerAck: p.ack,
    deadWindow: rawWindow(d),
    ...peerWindowKnowledge(rawWindow(p), p.wscale >= 0 ? p.wscale : undefined),
    ...(d.tsval ? { deadTsval: d.tsval, ...(nowMs !== undefined ? { deadTsvalAgeMs: Math.max(0, nowMs - d.lastSeenMs) } : {}) } : {}),
    ...(p.tsval ? { peerTsval: p.tsval } : {}),
  };
}

/** Whether both sides of a flow were seen sending: only then are its sequence numbers state. */
export function sidesSeen(d: FlowSide, p: FlowSide): boolean {
  return d.packets > 0 && p.packets > 0;
}

/** For goodbyes: where each followed connection's server stream stands (a BoundaryWatch). */
export type BoundaryLookup = (peer: Endpoint, local: Endpoint) => BoundaryState;

/**
 * Connections of the dead side among the flows, with what tracking saw of each, stamped with
 * when that was (`observedAt`). With `boundary`, each carries whether a goodbye would land
 * between messages there: only when the stream follower stands where the flow table does.
 */
export function deadConnectionsFromFlows(flows: FlowRecord[], dead: DeadSide, options: { nowMs?: number; boundary?: BoundaryLookup } = {}): DeadConnection[] {
  const out: DeadConnection[] = [];
  const address = canonicalAddress(dead.address);
  const now = options.nowMs ?? Date.now();
  for (const f of flows) {
    if (f.state === 'CLOSED' || f.state === 'RESET') continue;
    const [d, p] = isDeadSide(f.a, address, dead.port) ? [f.a, f.b] : isDeadSide(f.b, address, dead.port) ? [f.b, f.a] : [];
    if (!d || !p) continue;
    const local = { address, port: d.port };
    const peer = { address: p.address, port: p.port };
    // A flow the dead side never sent on (the peer's retransmission reaching this host after
    // the takeover) says nothing of the dead side's position: the connection, but no state.
    if (!sidesSeen(d, p)) {
      out.push({ local, peer });
      continue;
    }
    const tracked = trackedFromSides(d, p, now);
    if (options.boundary) Object.assign(tracked, boundaryAt(options.boundary(peer, local), d.nextSeq));
    // As fresh as what it says of the dead side (what a close needs most).
    out.push({ local, peer, tracked, observedAt: d.lastSeenMs });
  }
  return out;
}

/** A stream follower's verdict, valid only where it stands at the dead side's `deadNextSeq`. */
export function boundaryAt(b: BoundaryState, deadNextSeq: number): Pick<TrackedState, 'atBoundary' | 'boundaryReason'> {
  if (b.atBoundary && b.serverNext !== undefined && b.serverNext !== deadNextSeq) {
    return { atBoundary: false, boundaryReason: `the stream follower stands at ${b.serverNext}, the flow at ${deadNextSeq}` };
  }
  return { atBoundary: b.atBoundary, boundaryReason: b.reason };
}

/**
 * Merges connections named by the operator (untracked, learned by probing) with tracked ones
 * from any number of sources (the local capture, a peer's replicated table): for the same
 * connection a tracked entry beats an untracked one, and the most recently observed wins.
 */
export function mergeConnections(dead: DeadSide & { port: number }, peers: Endpoint[], ...trackedLists: DeadConnection[][]): DeadConnection[] {
  // One source alone (a replicated table, or one tracker) has each connection once already.
  const sources = [...trackedLists.filter((l) => l.length > 0), ...(peers.length > 0 ? [peers] : [])];
  if (sources.length === 1 && sources[0] !== peers) return sources[0] as DeadConnection[];
  const byKey = new Map<string, DeadConnection>();
  const canon = canonicalizer();
  const keyOf = (local: Endpoint, peer: Endpoint) => canonicalConnectionKey({ address: canon(local.address), port: local.port }, { address: canon(peer.address), port: peer.port });
  for (const peer of peers) {
    const local = { address: canonicalAddress(dead.address), port: dead.port };
    byKey.set(keyOf(local, peer), { local, peer });
  }
  for (const list of trackedLists) {
    for (const t of list) {
      const key = keyOf(t.local, t.peer);
      const had = byKey.get(key);
      if (!had || (t.tracked && !had.tracked) || (t.tracked && (t.observedAt ?? -Infinity) > (had.observedAt ?? -Infinity))) byKey.set(key, t);
    }
  }
  return [...byKey.values()];
}

/** A snapshot line as `takeover flows --json` prints it. */
export interface FlowSnapshot {
  time: number;
  interface: string;
  flows: FlowRecord[];
}

/**
 * Reads the newest snapshot from a file written by `takeover flows --json` (JSON lines, one
 * snapshot per line), or a plain JSON array of flows. Throws naming the file and the problem.
 */
export function readFlowSnapshot(file: string): FlowRecord[] {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  if (lines.length === 0) throw new Error(`${file}: no flows snapshot in the file`);
  let parsed: unknown;
  try {
    parsed = lines.length === 1 && lines[0]!.startsWith('[') ? JSON.parse(lines[0]!) : JSON.parse(lines[lines.length - 1]!);
  } catch (err) {
    throw new Error(`${file}: not JSON lines from \`takeover flows --json\`: ${(err as Error).message}`);
  }
  const flows = Array.isArray(parsed) ? parsed : (parsed as Partial<FlowSnapshot>).flows;
  if (!Array.isArray(flows)) throw new Error(`${file}: the last line has no "flows" array`);
  flows.forEach((f, i) => validateFlow(f, `${file}: flows[${i}]`));
  // Hand-edited files may spell addresses differently from the addon; match on one form.
  return (flows as FlowRecord[]).map((f) => ({
    ...f,
    a: { ...f.a, address: canonicalAddress(f.a.address) },
    b: { ...f.b, address: canonicalAddress(f.b.address) },
  }));
}

function validateFlow(f: unknown, where: string): void {
  const o = f as Record<string, unknown>;
  if (typeof o !== 'object' || o === null) throw new Error(`${where}: not an object`);
  for (const sideName of ['a', 'b']) {
    const side = o[sideName] as Record<string, unknown> | undefined;
    if (typeof side !== 'object' || side === null) throw new Error(`${where}.${sideName}: missing`);
    if (typeof side.address !== 'string' || net.isIP(side.address) === 0) throw new Error(`${where}.${sideName}.address: not an IP address`);
    for (const k of ['port', 'nextSeq', 'ack', 'window', 'wscale', 'tsval']) {
      if (typeof side[k] !== 'number' || !Number.isFinite(side[k])) throw new Error(`${where}.${sideName}.${k}: not a number`);
    }
  }
  if (typeof o.state !== 'string') throw new Error(`${where}.state: not a string`);
}
