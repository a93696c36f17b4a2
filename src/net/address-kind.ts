// What kind of IP address a text is: the kinds that cannot be a host's unicast endpoint (the
// unspecified address, loopback, multicast, the IPv4 limited broadcast) apart from the rest, so
// config checks can say why an address cannot be used where it is written.
import net from 'node:net';
import { wireAddress } from './endpoint.js';

export type AddressKind = 'unspecified' | 'loopback' | 'multicast' | 'broadcast' | 'unicast';

function list(subnets: Array<[string, number, 'ipv4' | 'ipv6']>): net.BlockList {
  const b = new net.BlockList();
  for (const [address, prefix, family] of subnets) b.addSubnet(address, prefix, family);
  return b;
}

const LOOPBACK = list([['127.0.0.0', 8, 'ipv4'], ['::1', 128, 'ipv6']]);
const MULTICAST = list([['224.0.0.0', 4, 'ipv4'], ['ff00::', 8, 'ipv6']]);

/**
 * The kind of an IPv4 or IPv6 address (an IPv4-mapped IPv6 address is judged as its IPv4
 * address). Link-local addresses are `unicast` here. Throws a TypeError for a non-address.
 */
export function addressKind(address: string): AddressKind {
  const a = wireAddress(address);
  const family = net.isIPv4(a) ? 'ipv4' : 'ipv6';
  if (a === '0.0.0.0' || a === '::') return 'unspecified';
  if (a === '255.255.255.255') return 'broadcast';
  if (LOOPBACK.check(a, family)) return 'loopback';
  if (MULTICAST.check(a, family)) return 'multicast';
  return 'unicast';
}
