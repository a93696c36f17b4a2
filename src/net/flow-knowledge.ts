// Turns tracked flows (live or from a snapshot file) into what the close engine needs to know
// about each connection of a dead side.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { FlowRecord, FlowSide } from '../native.js';
import type { DeadConnection } from './close-engine.js';
import { canonicalAddress, connectionKey, type Endpoint } from './endpoint.js';

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
function rawWindow(side: FlowSide): number {
  const shifted = side.wscale > 0 ? side.window >>> side.wscale : side.window;
  return Math.min(0xffff, Math.max(0, shifted));
}

/** Connections of the dead side among the flows, with what tracking saw of each. */
export function deadConnectionsFromFlows(flows: FlowRecord[], dead: DeadSide): DeadConnection[] {
  const out: DeadConnection[] = [];
  const address = canonicalAddress(dead.address);
  for (const f of flows) {
    if (f.state === 'CLOSED' || f.state === 'RESET') continue;
    const [d, p] = isDeadSide(f.a, address, dead.port) ? [f.a, f.b] : isDeadSide(f.b, address, dead.port) ? [f.b, f.a] : [];
    if (!d || !p) continue;
    out.push({
      local: { address, port: d.port },
      peer: { address: p.address, port: p.port },
      tracked: {
        deadNextSeq: d.nextSeq,
        peerNextSeq: p.nextSeq,
        peerAck: p.ack,
        deadWindow: rawWindow(d),
        ...(d.tsval ? { deadTsval: d.tsval } : {}),
        ...(p.tsval ? { peerTsval: p.tsval } : {}),
      },
    });
  }
  return out;
}

/**
 * Merges connections named by the operator (untracked, learned by probing) with tracked ones;
 * a tracked entry wins for the same connection.
 */
export function mergeConnections(dead: DeadSide & { port: number }, peers: Endpoint[], tracked: DeadConnection[]): DeadConnection[] {
  const byKey = new Map<string, DeadConnection>();
  for (const peer of peers) {
    const local = { address: canonicalAddress(dead.address), port: dead.port };
    byKey.set(connectionKey(local, peer), { local, peer });
  }
  for (const t of tracked) byKey.set(connectionKey(t.local, t.peer), t);
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
