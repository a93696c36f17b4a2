// Checks across the fields of an agent config that each field's own schema cannot see: configs
// that parse but cannot work as written (a link id given twice, a peer reached at this node's
// own address, a takeover prefix the kernel would take differently from what the operator meant,
// a field this agent would silently ignore). Each finding names its field path; none needs this
// host (host-checks.ts looks at the host).
import path from 'node:path';
import { addressKind } from '../net/address-kind.js';
import { canonicalAddress, familyOf } from '../net/endpoint.js';
import { defaultControlPath } from './control.js';
import { AppObjectError, newApp, type AppSpec } from '../cluster/app-object.js';

type Path = Array<string | number>;
export type Issue = (path: Path, message: string) => void;

interface Link {
  id: number;
  address: string;
  port: number;
}

/** The parts of a parsed config these checks read (before an instance's defaults are filled in). */
export interface CheckedConfig {
  node: string;
  keyFile?: string | undefined;
  heartbeat: { links: Link[]; intervalMs?: number };
  peers: Array<{
    node: string;
    links: Link[];
    takeover: Array<{ address: string; port: number; interface: string; prefixLength: number }>;
  }>;
  notify: { host: string };
  addressLease?: { seconds: number; addresses: Array<{ address: string; interface: string; prefixLength: number }> } | undefined;
  control?: string | undefined;
  stateDir?: string | undefined;
  relayKeeper?: { socket?: string | undefined } | undefined;
  instances: Array<{
    name: string;
    node: string;
    pid?: number | undefined;
    pidFile?: string | undefined;
    command?: string[] | undefined;
    restart?: unknown;
    health?: { probe: { kind: string; host?: string } } | undefined;
    ports?: number[] | undefined;
    method?: string | undefined;
  }>;
  services: Array<{ name: string; members: string[] }>;
  callouts?: { dir: string } | undefined;
  uptimeLog?: string | undefined;
  disk?: { device: string } | undefined;
  fencing?: { devices: string[] } | undefined;
  cluster: string;
  store?: { etcd?: unknown } | undefined;
  apps: AppSpec[];
}

/** The longest Unix socket path that is not cut short: sun_path holds 108 bytes with its NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Fields of an instance that only the agent of the instance's node reads. */
const LOCAL_INSTANCE_FIELDS = ['pid', 'pidFile', 'command', 'restart', 'health', 'ports', 'method'] as const;

const same = (a: string, b: string) => canonicalAddress(a) === canonicalAddress(b);

/**
 * Whether sockets bound to a and b (the same port) collide: the same address, or a wildcard
 * that covers the other (0.0.0.0 every IPv4 address; `::` every address, IPv4 too, since the
 * agent's IPv6 sockets are dual-stack).
 */
function bindsOverlap(a: string, b: string): boolean {
  if (same(a, b)) return true;
  const wild = (x: string, y: string) => addressKind(x) === 'unspecified' && (familyOf(x) === 6 || familyOf(y) === 4);
  return wild(a, b) || wild(b, a);
}

const endpoint = (l: { address: string; port: number }) => (familyOf(l.address) === 6 ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`);

/** Runs every check; `issue` is called once per finding (zod's ctx.addIssue in config.ts). */
export function checkConfig(c: CheckedConfig, issue: Issue): void {
  checkOwnLinks(c, issue);
  checkNotify(c, issue);
  checkPeerLinks(c, issue);
  checkTakeovers(c, issue);
  checkLease(c, issue);
  checkInstances(c, issue);
  checkServices(c, issue);
  checkPaths(c, issue);
  checkApps(c, issue);
}

/** Each application as the store would take it, among this cluster's nodes; tags once each; a store to keep them. */
function checkApps(c: CheckedConfig, issue: Issue): void {
  if (c.apps.length > 0 && c.store === undefined) issue(['apps'], 'clustered applications need a store: add `store: { file: ... }` or `store: { etcd: ... }`');
  // etcd keys live under /takeover/CLUSTER/: the name must be a plain path segment.
  if (c.store?.etcd !== undefined && !/^[A-Za-z0-9._-]+$/.test(c.cluster)) issue(['cluster'], `${c.cluster} cannot name keys in etcd: use letters, digits, '.', '_' or '-' with store.etcd`);
  const nodes = [c.node, ...c.peers.map((p) => p.node)];
  c.apps.forEach((a, i) => {
    if (c.apps.findIndex((o) => o.tag === a.tag) !== i) issue(['apps', i, 'tag'], `${a.tag} is listed twice`);
    try {
      newApp(a, nodes, 0);
    } catch (err) {
      if (!(err instanceof AppObjectError)) throw err;
      issue(['apps', i, ...(err.field ? [err.field] : [])], err.detail);
    }
  });
}

function checkOwnLinks(c: CheckedConfig, issue: Issue): void {
  const links = c.heartbeat.links;
  links.forEach((l, j) => {
    const first = links.findIndex((o) => o.id === l.id);
    if (first !== j) {
      issue(['heartbeat', 'links', j, 'id'], `link id ${l.id} is also heartbeat.links[${first}]'s: each link needs its own id (with one id for two links, the loss of either looks like the loss of the node)`);
    }
    const kind = addressKind(l.address);
    if (kind === 'multicast' || kind === 'broadcast') {
      issue(['heartbeat', 'links', j, 'address'], `${l.address} is a ${kind} address: give this node's unicast address on the link (or 0.0.0.0 / :: for any)`);
    }
    const clash = links.findIndex((o, k) => k < j && o.port === l.port && bindsOverlap(o.address, l.address));
    if (clash >= 0) {
      issue(['heartbeat', 'links', j], `${endpoint(l)} overlaps heartbeat.links[${clash}] (${endpoint(links[clash]!)}): two sockets cannot bind the same address and port`);
    }
  });
}

function checkNotify(c: CheckedConfig, issue: Issue): void {
  const kind = addressKind(c.notify.host);
  if (kind === 'multicast' || kind === 'broadcast') issue(['notify', 'host'], `${c.notify.host} is a ${kind} address: subscribers connect to this node's unicast address (or 0.0.0.0 / :: for any)`);
}

function checkPeerLinks(c: CheckedConfig, issue: Issue): void {
  const own = new Map(c.heartbeat.links.map((l, j) => [l.id, j]));
  const seen: Array<{ at: string; node: string; link: Link }> = [];
  c.peers.forEach((p, i) => {
    p.links.forEach((l, j) => {
      const at: Path = ['peers', i, 'links', j];
      if (p.links.findIndex((o) => o.id === l.id) !== j) issue([...at, 'id'], `link id ${l.id} appears twice for node ${p.node}: one address per link`);
      const mine = own.get(l.id);
      if (mine === undefined) {
        issue([...at, 'id'], `no link ${l.id} in heartbeat.links: nothing would be sent or heard on it`);
      } else if (familyOf(l.address) !== familyOf(c.heartbeat.links[mine]!.address)) {
        issue([...at, 'address'], `${l.address} is IPv${familyOf(l.address)} but this node's link ${l.id} (heartbeat.links[${mine}]) is IPv${familyOf(c.heartbeat.links[mine]!.address)}: a link's socket speaks one family`);
      }
      const kind = addressKind(l.address);
      if (kind === 'unspecified') issue([...at, 'address'], `${l.address} is not a peer's address (a datagram sent there reaches this host itself)`);
      else if (kind === 'multicast' || kind === 'broadcast') issue([...at, 'address'], `${l.address} is a ${kind} address: heartbeats go to each peer's unicast address`);
      const self = c.heartbeat.links.findIndex((o) => o.port === l.port && same(o.address, l.address));
      if (self >= 0) issue([...at, 'address'], `${endpoint(l)} is this node's own heartbeat.links[${self}]: heartbeats would go to this node itself`);
      const other = seen.find((s) => s.node !== p.node && s.link.port === l.port && same(s.link.address, l.address));
      if (other) issue([...at, 'address'], `${endpoint(l)} is also ${other.at} (node ${other.node}): two nodes cannot listen at one address and port`);
      seen.push({ at: `peers[${i}].links[${j}]`, node: p.node, link: l });
    });
  });
}

function checkTakeovers(c: CheckedConfig, issue: Issue): void {
  const owner = new Map<string, { node: string; at: string }>();
  const ownAddresses = [
    ...c.heartbeat.links.map((l, j) => ({ address: l.address, at: `heartbeat.links[${j}]` })),
    { address: c.notify.host, at: 'notify.host' },
  ].filter((a) => addressKind(a.address) !== 'unspecified');
  c.peers.forEach((p, i) => {
    if (!Array.isArray(p.takeover)) return; // (a takeover that did not parse is already an issue)
    p.takeover.forEach((t, j) => {
      const at: Path = p.takeover.length > 1 ? ['peers', i, 'takeover', j] : ['peers', i, 'takeover'];
      // The prefix is applied as written: refuse what cannot be meant (an IPv4 length given to
      // an IPv6 address was once silently raised to 64; now it is an error, not a guess).
      const prefix = prefixProblem(t.address, t.prefixLength);
      if (prefix) issue([...at, 'prefixLength'], prefix);
      const kind = addressKind(t.address);
      if (kind !== 'unicast') issue([...at, 'address'], `${t.address} is a${kind === 'unspecified' ? 'n' : ''} ${kind} address: a service address is a unicast address clients reach`);
      const mine = ownAddresses.find((a) => same(a.address, t.address));
      if (mine) issue([...at, 'address'], `${t.address} is this node's own address (${mine.at}): there is nothing to take over`);
      const key = canonicalAddress(t.address);
      const first = owner.get(key);
      if (first && first.node !== p.node) {
        issue([...at, 'address'], `${t.address} is taken over from node ${first.node} too (${first.at}): when either node dies this node would take it while the other may still serve it; one address, one peer`);
      }
      if (!first) owner.set(key, { node: p.node, at: `peers[${i}].takeover` });
    });
  });
}

/** A prefix length applied as written: 1-32 for IPv4, 64-128 for IPv6; the message, or undefined. */
function prefixProblem(address: string, prefixLength: number): string | undefined {
  const family = familyOf(address);
  if (family === 4 && (prefixLength < 1 || prefixLength > 32)) return `must be from 1 to 32 for the IPv4 address ${address}, got ${prefixLength}`;
  if (family === 6 && prefixLength < 64) return `must be from 64 to 128 for the IPv6 address ${address}, got ${prefixLength} (IPv6 subnets are /64 or longer; it is applied as written, never widened)`;
  return undefined;
}

/**
 * The address lease: this node's own service addresses, each once, none that the agent needs to
 * keep (a heartbeat link's, notify.host: they would run out with the agent) or that it takes
 * over from a peer (that one is the peer's), and a lease long enough for its renewals: every
 * quarter of it, at heartbeats, given up a second before it runs out.
 */
function checkLease(c: CheckedConfig, issue: Issue): void {
  const lease = c.addressLease;
  if (!lease) return;
  const own = [
    ...c.heartbeat.links.map((l, j) => ({ address: l.address, at: `heartbeat.links[${j}]` })),
    { address: c.notify.host, at: 'notify.host' },
  ];
  lease.addresses.forEach((a, j) => {
    const at: Path = ['addressLease', 'addresses', j];
    const prefix = prefixProblem(a.address, a.prefixLength);
    if (prefix) issue([...at, 'prefixLength'], prefix);
    const kind = addressKind(a.address);
    if (kind !== 'unicast') issue([...at, 'address'], `${a.address} is a${kind === 'unspecified' ? 'n' : ''} ${kind} address: a service address is a unicast address clients reach`);
    const first = lease.addresses.findIndex((o) => same(o.address, a.address));
    if (first !== j) issue([...at, 'address'], `${a.address} is also addressLease.addresses[${first}]: lease each address once`);
    const mine = own.find((o) => addressKind(o.address) !== 'unspecified' && same(o.address, a.address));
    if (mine) issue([...at, 'address'], `${a.address} is ${mine.at}: the agent's own address must not run out when the agent stops; lease only service addresses`);
    c.peers.forEach((p, i) => {
      if (!Array.isArray(p.takeover)) return;
      const t = p.takeover.findIndex((x) => same(x.address, a.address));
      if (t >= 0) issue([...at, 'address'], `${a.address} is taken over from node ${p.node} (peers[${i}].takeover${p.takeover.length > 1 ? `[${t}]` : ''}): a lease is for this node's own service address, not a peer's`);
    });
  });
  const interval = c.heartbeat.intervalMs ?? 100;
  if (lease.seconds * 1000 < 1000 + 3 * interval) {
    issue(['addressLease', 'seconds'], `${lease.seconds} s is too short for heartbeat.intervalMs ${interval}: renewals happen at heartbeats and a lease is given up a second before it runs out, so it must be at least 1 s + 3 heartbeat intervals (${Math.ceil((1000 + 3 * interval) / 1000)} s)`);
  }
}

function checkInstances(c: CheckedConfig, issue: Issue): void {
  const portOwner = new Map<number, number>();
  c.instances.forEach((inst, i) => {
    if (inst.node !== c.node) {
      for (const f of LOCAL_INSTANCE_FIELDS) {
        if (inst[f] !== undefined) {
          issue(['instances', i, f], `instance ${inst.name} runs on node ${inst.node}: only ${inst.node}'s agent reads ${f} (this agent, node ${c.node}, would ignore it); give it in ${inst.node}'s config only`);
        }
      }
      return;
    }
    (inst.ports ?? []).forEach((port, j) => {
      const other = portOwner.get(port);
      if (inst.ports!.indexOf(port) !== j) issue(['instances', i, 'ports', j], `port ${port} appears twice`);
      else if (other !== undefined) {
        issue(['instances', i, 'ports', j], `port ${port} is also instance ${c.instances[other]!.name}'s (instances[${other}]): the failure plan closes every connection of a port, so either instance's failure would end the other's connections`);
      } else portOwner.set(port, i);
    });
    if (inst.method?.startsWith('goodbye:') && (inst.ports ?? []).length === 0) {
      issue(['instances', i, 'method'], `${inst.method} needs ports: a goodbye goes only where the streams of the instance's ports were followed (without ports every connection would get a RST)`);
    }
    const host = inst.health?.probe.host;
    if (host !== undefined) {
      const kind = addressKind(host);
      if (kind === 'multicast' || kind === 'broadcast') issue(['instances', i, 'health', 'probe', 'host'], `${host} is a ${kind} address: a TCP probe connects to one host`);
    }
  });
}

function checkServices(c: CheckedConfig, issue: Issue): void {
  c.services.forEach((s, i) => {
    s.members.forEach((m, j) => {
      if (s.members.indexOf(m) !== j) issue(['services', i, 'members', j], `instance ${m} appears twice`);
    });
  });
}

/** Files the agent opens: absolute (its working directory is not the config file's), sockets not cut short. */
function checkPaths(c: CheckedConfig, issue: Issue): void {
  const absolute = (at: Path, p: string | undefined) => {
    if (p !== undefined && !path.isAbsolute(p)) issue(at, `${p} must be an absolute path (the agent's working directory is not the config file's)`);
  };
  absolute(['keyFile'], c.keyFile);
  absolute(['control'], c.control);
  absolute(['callouts', 'dir'], c.callouts?.dir);
  absolute(['uptimeLog'], c.uptimeLog);
  absolute(['disk', 'device'], c.disk?.device);
  c.fencing?.devices.forEach((d, k) => absolute(['fencing', 'devices', k], d));
  c.instances.forEach((inst, i) => {
    if (inst.node === c.node) absolute(['instances', i, 'pidFile'], inst.pidFile);
  });
  absolute(['relayKeeper', 'socket'], c.relayKeeper?.socket);
  const socketFits = (at: Path, given: string | undefined, used: string, what: string) => {
    const bytes = Buffer.byteLength(used);
    if (bytes > MAX_SOCKET_PATH_BYTES) issue(at, `${given === undefined ? `the default ${what} ${used}` : used} is ${bytes} bytes: a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES} (a longer one is cut short)`);
  };
  socketFits(['control'], c.control, c.control ?? defaultControlPath(c.node), 'control socket');
  const keeper = relayKeeperSocket(c);
  if (keeper !== undefined) socketFits(['relayKeeper', 'socket'], c.relayKeeper?.socket, keeper, 'relay keeper socket');
}

/** Where the agent keeps its runtime state: `stateDir`, or the control socket's directory + /NODE. */
export function stateDirOf(c: { stateDir?: string | undefined; control?: string | undefined; node: string }): string {
  return c.stateDir ?? path.join(path.dirname(c.control ?? defaultControlPath(c.node)), c.node);
}

/** The relay keeper's socket: `relayKeeper.socket`, or stateDir/relay-keeper.sock; undefined without `relayKeeper`. */
export function relayKeeperSocket(c: { relayKeeper?: { socket?: string | undefined } | undefined; stateDir?: string | undefined; control?: string | undefined; node: string }): string | undefined {
  if (c.relayKeeper === undefined) return undefined;
  return c.relayKeeper.socket ?? path.join(stateDirOf(c), 'relay-keeper.sock');
}
