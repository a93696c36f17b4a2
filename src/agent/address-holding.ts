// One address, one holder. After a takeover this node holds a service address that was a peer's;
// when that peer turns out to be alive (a partition healed, its agent restarted after a SIGKILL
// while its node and service lived on) both hosts would answer for the address. The agents settle
// it over the heartbeats, which carry the service addresses each node holds (AddressClaim):
//   - the taker claims what it took over (`taken`), with the peer it took it from recorded (and
//     persisted, so a restarted agent still knows the address was taken, not its own);
//   - a node that holds an address a peer claims as taken answers with its own claim (`taken`
//     false): it holds it as its own. If it was fenced meanwhile it must not serve: it removes the
//     address instead (gives it up);
//   - the taker, hearing the node it took the address from claim it as its own, removes it here
//     (gives it back): this node runs nothing behind a taken address yet (it only spoke for the dead
//     side's connections), and the returning node does. The gap: about one heartbeat interval.
// A node whose agent is dead cannot answer: the address stays on both until that agent restarts
// (fencing guards the shared disk meanwhile), unless the node holds it under an address lease
// (address-lease.ts): then it goes by itself, and the taker adds it only after that.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { canonicalAddress } from '../net/endpoint.js';
import type { AddressClaim } from '../monitor/heartbeat-packet.js';
import { MAX_CLAIMS } from '../monitor/heartbeat-packet.js';

export interface HostAddress {
  ifname: string;
  prefixLength: number;
}

export interface AddressHoldingOptions {
  /** The service addresses this node takes over, per peer (from `peers[].takeover`). */
  takeovers: Array<{ peer: string; address: string }>;
  /** Heard heartbeats of live peers with their claims. */
  heartbeat: { on(name: 'heard', fn: (h: { node: string; claims: AddressClaim[] }) => void): unknown; off(name: 'heard', fn: (h: { node: string; claims: AddressClaim[] }) => void): unknown };
  /** True once this node found itself fenced: it gives up what peers took over. */
  isFenced: () => boolean;
  /** How long a peer's claim counts after its last heartbeat, ms (the detector's timeout). */
  freshMs: number;
  /** Where the taken-over addresses are persisted (JSON: address -> peer). */
  stateFile: string;
  /** Where an address sits on this host; default: os.networkInterfaces(). */
  find?: (address: string) => HostAddress | undefined;
  /** Removes an address (default: rtnetlink RTM_DELADDR, net/address.ts). */
  remove: (ifname: string, address: string, prefixLength: number) => void;
  /**
   * Announces an own address again (gratuitous ARP / unsolicited NA) once the peer that had
   * taken it gave it back: the clients' neighbour caches still send to the peer's MAC until they
   * expire otherwise (a trial saw ~9 s). Errors are the caller's to report.
   */
  announce?: (ifname: string, address: string) => Promise<void>;
}

/** An own address announced again after a peer gave it back. */
export interface AddressReclaimed {
  address: string;
  /** The peer that had taken it. */
  from: string;
  at: number;
  error?: string;
}

export interface AddressReleased {
  address: string;
  /** The peer that holds it now. */
  to: string;
  /** 'gave-back': a taken address returned to its live owner; 'gave-up': this node was fenced. */
  why: 'gave-back' | 'gave-up';
  at: number;
  error?: string;
}

const now = () => performance.timeOrigin + performance.now();

export class AddressHolding extends EventEmitter<{ released: [AddressReleased]; reclaimed: [AddressReclaimed] }> {
  /** Addresses this node took over: address -> the peer it took it from. */
  private readonly taken = new Map<string, string>();
  /** Own addresses a peer claims as taken: address -> until when this node answers. */
  private readonly contested = new Map<string, { peer: string; until: number }>();
  private readonly find: (address: string) => HostAddress | undefined;
  private readonly onHeard = (h: { node: string; claims: AddressClaim[] }) => this.heard(h.node, h.claims);

  constructor(private readonly options: AddressHoldingOptions) {
    super();
    this.find = options.find ?? findOnHost;
    for (const [address, peer] of Object.entries(readTaken(options.stateFile))) {
      // Still here after a restart: still taken. Gone: nothing to claim.
      if (this.find(address)) this.taken.set(address, peer);
    }
    options.heartbeat.on('heard', this.onHeard);
  }

  close(): void {
    this.options.heartbeat.off('heard', this.onHeard);
  }

  /** The takeover of `address` from `peer` is done (added or already there): it is claimed as taken. */
  tookOver(peer: string, address: string): void {
    this.taken.set(canonicalAddress(address), peer);
    this.persist();
  }

  /** What this node's heartbeats say it holds (at most MAX_CLAIMS). */
  claims(): AddressClaim[] {
    const out: AddressClaim[] = [];
    for (const address of this.taken.keys()) if (this.find(address)) out.push({ address, taken: true });
    const t = now();
    for (const [address, c] of this.contested) {
      if (c.until < t) this.contested.delete(address);
      else if (!this.taken.has(address) && this.find(address)) out.push({ address, taken: false });
    }
    return out.slice(0, MAX_CLAIMS);
  }

  /** Addresses held as taken, with the peer each came from (for status). */
  holding(): Array<{ address: string; from: string }> {
    return [...this.taken].filter(([a]) => this.find(a)).map(([address, from]) => ({ address, from }));
  }

  private heard(peer: string, claims: AddressClaim[]): void {
    // An own address this peer claimed as taken and no longer claims: it gave it back.
    for (const [address, c] of this.contested) {
      if (c.peer !== peer || claims.some((x) => x.taken && x.address === address)) continue;
      this.contested.delete(address);
      const here = this.find(address);
      if (here && this.options.announce) {
        void this.options.announce(here.ifname, address).then(
          () => this.emit('reclaimed', { address, from: peer, at: now() }),
          (err: Error) => this.emit('reclaimed', { address, from: peer, at: now(), error: err.message }),
        );
      }
    }
    for (const c of claims) {
      const here = this.find(c.address);
      if (c.taken) {
        if (!here || this.taken.has(c.address)) continue;
        if (this.options.isFenced()) this.release(c.address, here, peer, 'gave-up');
        else this.contested.set(c.address, { peer, until: now() + this.options.freshMs });
      } else if (this.taken.get(c.address) === peer && here) {
        this.release(c.address, here, peer, 'gave-back');
      }
    }
  }

  private release(address: string, here: HostAddress, to: string, why: AddressReleased['why']): void {
    let error: string | undefined;
    try {
      this.options.remove(here.ifname, address, here.prefixLength);
    } catch (err) {
      error = (err as Error).message;
    }
    if (!error && this.taken.delete(address)) this.persist();
    this.emit('released', { address, to, why, at: now(), ...(error ? { error } : {}) });
  }

  private writing: Promise<void> = Promise.resolve();

  /** Writes the taken addresses, one write at a time (each the state as it is when it runs). */
  private persist(): void {
    const file = this.options.stateFile;
    const tmp = `${file}.${process.pid}.tmp`;
    this.writing = this.writing
      .then(() => mkdir(path.dirname(file), { recursive: true, mode: 0o700 }))
      .then(() => writeFile(tmp, `${JSON.stringify(Object.fromEntries(this.taken))}\n`, { mode: 0o600 }))
      .then(() => rename(tmp, file))
      .catch(() => undefined); // the interface itself is the truth at the next start
  }
}

function readTaken(file: string): Record<string, string> {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (typeof o !== 'object' || o === null) return {};
    return Object.fromEntries(Object.entries(o).filter(([a, p]) => typeof p === 'string' && isIp(a)).map(([a, p]) => [canonicalAddress(a), p as string]));
  } catch {
    return {};
  }
}

function isIp(s: string): boolean {
  try {
    canonicalAddress(s);
    return true;
  } catch {
    return false;
  }
}

let cached: { at: number; interfaces: ReturnType<typeof os.networkInterfaces> } | undefined;

/**
 * The interface and prefix length of `address` on this host, from getifaddrs(3) (one read per
 * 20 ms at most: a heartbeat asks about each claim).
 */
export function findOnHost(address: string): HostAddress | undefined {
  const t = now();
  if (!cached || t - cached.at > 20) cached = { at: t, interfaces: os.networkInterfaces() };
  for (const [ifname, list] of Object.entries(cached.interfaces)) {
    for (const a of list ?? []) {
      if (canonicalAddress(a.address) === address) return { ifname, prefixLength: Number(a.cidr?.split('/')[1] ?? (a.family === 'IPv4' ? 32 : 128)) };
    }
  }
  return undefined;
}
