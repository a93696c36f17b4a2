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

export function familyOf(address: string): 4 | 6 {
  const f = net.isIP(address);
  if (f === 0) throw new TypeError(`not an IP address: ${address}`);
  return f as 4 | 6;
}

export function endpointKey(e: Endpoint): string {
  return `${canonicalAddress(e.address)}|${e.port}`;
}

/** Key of a connection seen from one side: (local, remote). */
export function connectionKey(local: Endpoint, remote: Endpoint): string {
  return `${endpointKey(local)}>${endpointKey(remote)}`;
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
