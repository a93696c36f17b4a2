// Endpoints and connection keys, with addresses in one canonical text form.
import net from 'node:net';

export interface Endpoint {
  address: string;
  port: number;
}

/** Canonical text of an IP address (IPv6 compressed, lower case; v4-mapped kept as mapped). */
export function canonicalAddress(address: string): string {
  const family = net.isIP(address);
  if (family === 0) throw new TypeError(`not an IP address: ${address}`);
  if (family === 4) return address;
  const sa = new net.SocketAddress({ address, family: 'ipv6' });
  return sa.address;
}

const V4_MAPPED = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;

/**
 * The address as it appears on the wire: canonical text, and an IPv4-mapped IPv6 address
 * (how a dual-stack `::` socket names its IPv4 peers, e.g. in sock_diag) as the IPv4 address.
 */
export function wireAddress(address: string): string {
  const c = canonicalAddress(address);
  return V4_MAPPED.exec(c)?.[1] ?? c;
}

export function familyOf(address: string): 4 | 6 {
  const f = net.isIP(address);
  if (f === 0) throw new TypeError(`not an IP address: ${address}`);
  return f as 4 | 6;
}

/**
 * Whether an address is link-local (fe80::/10, 169.254.0.0/16): meaningful on one link only,
 * so whatever is sent to it must name the interface (the routing table has a route for it on
 * every interface). A zone suffix (%eth1) is ignored.
 */
export function isLinkLocal(address: string): boolean {
  const bare = address.split('%')[0]!;
  if (familyOf(bare) === 4) return bare.startsWith('169.254.');
  return /^fe[89ab][0-9a-f]:/i.test(canonicalAddress(bare));
}

export function endpointKey(e: Endpoint): string {
  return `${canonicalAddress(e.address)}|${e.port}`;
}

/** Key of a connection seen from one side: (local, remote). */
export function connectionKey(local: Endpoint, remote: Endpoint): string {
  return `${endpointKey(local)}>${endpointKey(remote)}`;
}

/**
 * connectionKey for endpoints whose addresses are already canonical (from the addon, a decoded
 * datagram, canonicalAddress): the same key without parsing each address again, for the paths
 * that key tens of thousands of connections.
 */
export function canonicalConnectionKey(local: Endpoint, remote: Endpoint): string {
  return `${local.address}|${local.port}>${remote.address}|${remote.port}`;
}

/**
 * A function of an address with a memory: thousands of connections share a few addresses, each
 * converted once. The memory holds at most `maxEntries` addresses and starts over when full, so a
 * long-lived one (an agent's) stays bounded however many clients come and go.
 */
export function memoizedByAddress<T>(of: (address: string) => T, maxEntries = 4096): (address: string) => T {
  const seen = new Map<string, T>();
  return (address) => {
    let c = seen.get(address);
    if (c === undefined) {
      if (seen.size >= maxEntries) seen.clear();
      seen.set(address, (c = of(address)));
    }
    return c;
  };
}

/** canonicalAddress (or another such function, e.g. wireAddress), memoized (memoizedByAddress). */
export function canonicalizer(of: (address: string) => string = canonicalAddress): (address: string) => string {
  return memoizedByAddress(of);
}

export function formatEndpoint(e: Endpoint): string {
  return familyOf(e.address) === 6 ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** Parses "1.2.3.4:80" or "[::1]:80". Throws a TypeError naming the bad text. */
export function parseEndpoint(text: string): Endpoint {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m) throw new TypeError(`expected ADDRESS:PORT or [IPV6]:PORT, got "${text}"`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`bad port in "${text}"`);
  if (net.isIP(m[1]!) === 0) throw new TypeError(`bad address in "${text}"`);
  return { address: canonicalAddress(m[1]!), port };
}

/** The address's bytes in network order: 4 for IPv4, 16 for IPv6. Throws a TypeError for a non-address. */
export function addressBytes(address: string): Buffer {
  if (familyOf(address) === 4) return Buffer.from(address.split('.').map(Number));
  const sa = new net.SocketAddress({ address, family: 'ipv6' }).address;
  const [head, tail] = sa.includes('::') ? sa.split('::') : [sa, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  // A dotted-quad tail (::ffff:1.2.3.4) stands for two groups.
  const expand = (groups: string[]) =>
    groups.flatMap((g) => {
      if (!g.includes('.')) return [parseInt(g, 16)];
      const o = g.split('.').map(Number);
      return [(o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!];
    });
  const hv = expand(h);
  const tv = expand(t);
  const words = tail === undefined ? hv : [...hv, ...Array<number>(8 - hv.length - tv.length).fill(0), ...tv];
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, 2 * i));
  return out;
}

/** The canonical text of 4 or 16 address bytes (the inverse of addressBytes). */
export function addressFromBytes(b: Uint8Array): string {
  if (b.length === 4) return [...b].join('.');
  if (b.length !== 16) throw new RangeError(`an address has 4 or 16 bytes, not ${b.length}`);
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return canonicalAddress(words.join(':'));
}
