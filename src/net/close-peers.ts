// closePeers: the one call for both cases. A local hung process ({ pid }) is closed through its
// own sockets; a dead remote side ({ address, port }) through forged segments, with the
// connections from a live tracker, a flows snapshot and/or a list of peers.
import type { FlowRecord } from '../native.js';
import { closeLocalPeers, closePortPeers, type LocalCloseOptions } from './close-local.js';
import { parseCloseMethod, type CloseMethod } from './close-method.js';
import { closeRemotePeers, interfaceOfAddress, interfacesOfAddress, linkOfAddress, type RemoteCloseReport } from './close-remote.js';
import type { CloseResult } from './close-result.js';
import type { DeadConnection, EngineOptions } from './close-engine.js';
import { canonicalAddress, canonicalizer, isLinkLocal, type Endpoint } from './endpoint.js';
import { deadConnectionsFromFlows, mergeConnections, type BoundaryLookup } from './flow-knowledge.js';
import { FlowTracker } from './flow-tracker.js';
import { answerCapture, mergedSource } from './answer-sources.js';

export interface LocalTarget {
  pid: number;
  /** Only connections on these local ports. */
  ports?: number[];
}

/** Every connection on these local ports in this network namespace, whoever holds it. */
export interface LocalPortsTarget {
  ports: number[];
}

export interface RemoteTarget {
  /** The dead side's address and port. */
  address: string;
  port: number;
  /** Peers to close that tracking may not know (learned by probing). */
  peers?: Endpoint[];
  /** Tracked flows, e.g. from readFlowSnapshot(). */
  flows?: FlowRecord[];
  /**
   * A running tracker: its flows are used, and it hears the answers when it captures on the
   * address's interface (or 'any'). One on another interface (a port mirror's copy of the dead
   * node's traffic) does not: the peers answer the taken-over address on its own link, where
   * closePeers then listens too (`answers`, or a capture it sets up), from before anything is sent.
   */
  tracker?: FlowTracker;
  /**
   * A running capture on the address's interface for the peers' answers, when `tracker`
   * captures elsewhere: started ahead by the caller, so the close does not set one up then (a
   * ring's setup waits for a kernel RCU grace period, tens of ms under load). Its flows are not
   * used. Ignored when `tracker` captures the address's interface, or when this one does not.
   */
  answers?: FlowTracker;
  /**
   * Connections known from elsewhere, with their state: the dead node's replicated table (the
   * agent's). Merged with the tracked flows; for the same connection the newest state wins.
   */
  known?: DeadConnection[];
  /** For goodbyes: a stream follower over the tracker (BoundaryWatch.state), so tracked flows carry their boundary. */
  boundary?: BoundaryLookup;
  /**
   * The interface the address is on: where answers arrive when no tracker is given, and the
   * link that segments to link-local peers leave through. Default: the takeover's, else the
   * interface holding address (a link-local address held by several must be named).
   */
  interface?: string;
  /** Take the address over on this interface first. */
  takeover?: { interface: string; prefixLength: number; announce?: number };
}

export interface ClosePeersOptions {
  method?: CloseMethod | string;
  assumeBoundary?: boolean;
  /** Local targets, goodbyes: per connection, what a stream follower knows (the agent's own tracking). */
  localBoundary?: LocalCloseOptions['boundary'];
  guard?: boolean;
  engine?: EngineOptions;
  timeoutMs?: number;
}

export type ClosePeersReport = { results: CloseResult[] } & Partial<Omit<RemoteCloseReport, 'results'>>;

export async function closePeers(target: LocalTarget | LocalPortsTarget | RemoteTarget, options: ClosePeersOptions = {}): Promise<ClosePeersReport> {
  const method = typeof options.method === 'string' ? parseCloseMethod(options.method) : (options.method ?? { kind: 'rst' });
  const local = { assumeBoundary: options.assumeBoundary === true, ...(options.localBoundary ? { boundary: options.localBoundary } : {}) };
  if ('pid' in target) {
    return { results: await closeLocalPeers(target.pid, method, { ...(target.ports ? { ports: target.ports } : {}), ...local }) };
  }
  if (!('address' in target)) return { results: await closePortPeers(target.ports, method, local) };
  const dead = { address: canonicalAddress(target.address), port: target.port };
  // Each source names a connection once (a flow table, a snapshot of one, a replicated table);
  // the same one in two is merged, the newest state winning.
  const fromFlows = (flows: FlowRecord[] | undefined) => deadConnectionsFromFlows(flows ?? [], dead, target.boundary ? { boundary: target.boundary } : {});
  const canon = canonicalizer();
  const known = (target.known ?? []).filter((c) => c.local.port === dead.port && canon(c.local.address) === dead.address); // of this service only
  const connections = mergeConnections(dead, target.peers ?? [], fromFlows(target.flows), fromFlows(target.tracker?.flows()), known);
  // A link-local address names a link only with its interface: held by several, it is ambiguous.
  const ifname = target.takeover?.interface ?? target.interface ?? (isLinkLocal(dead.address) && interfacesOfAddress(dead.address).length > 0 ? linkOfAddress(dead.address) : interfaceOfAddress(dead.address));
  if (ifname === undefined && !target.tracker) {
    throw Object.assign(new Error(`${dead.address} is not an address of this host; take it over (takeover option) or pass the interface`), {
      code: 'ERR_ADDRESS_NOT_OWNED',
    });
  }
  // Listen before anything is sent or announced, so no answer is missed: on the address's link,
  // unless the caller's tracker already captures there (a mirror's tracker does not), with the
  // caller's capture of it if there is one, else one of our own.
  const pick = answerCapture(ifname, target.tracker?.options.interface, target.answers?.options.interface);
  const own = pick === 'own' ? new FlowTracker({ interface: ifname!, hosts: [dead.address], ports: [dead.port] }) : undefined;
  const onLink = pick === 'answers' ? target.answers : own;
  const answers = target.tracker && onLink ? mergedSource(target.tracker, onLink) : (target.tracker ?? onLink!);
  try {
    own?.start();
    return await closeRemotePeers({
      connections,
      addresses: [dead.address], // taken over even when no connection is known
      method,
      answers,
      ...(target.takeover ? { takeover: target.takeover } : {}),
      ...(ifname !== undefined ? { interface: ifname } : {}),
      ...(options.guard !== undefined ? { guard: options.guard } : {}),
      engine: { ...options.engine, assumeBoundary: options.assumeBoundary === true },
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    });
  } finally {
    own?.close();
  }
}
