// Validation of CLI option values: each failure names the option and the value.
import { parseCloseMethod, type CloseMethod } from '../net/close-method.js';
import { canonicalAddress, isLinkLocal, parseEndpoint, type Endpoint } from '../net/endpoint.js';
import net from 'node:net';
import { interfaceExists } from '../net/interfaces.js';
import { UsageError } from './errors.js';

/**
 * A decimal integer from min to max. One message for every failure, which says the range: "-5"
 * is an integer, only not one the option takes. `context` (e.g. "for the IPv6 address ...")
 * follows the range when the range depends on another argument.
 */
export function intOption(name: string, value: string, min: number, max: number, context?: string): number {
  const n = /^-?\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`${name} must be an integer from ${min} to ${max}${context ? ` ${context}` : ''}, got "${value}"`);
  return n;
}

export function portOption(name: string, value: string): number {
  return intOption(name, value, 1, 65535);
}

export function addressOption(name: string, value: string): string {
  if (net.isIP(value) === 0) throw new UsageError(`${name} must be an IPv4 or IPv6 address, got "${value}"`);
  return canonicalAddress(value);
}

/**
 * The zone of an address option (`fe80::1%eth1` → 'eth1'), or undefined without one. A zone
 * names an interface and goes only with a link-local address.
 */
export function zoneOption(name: string, value: string, address: string): string | undefined {
  const i = value.indexOf('%');
  if (i < 0) return undefined;
  const zone = value.slice(i + 1);
  if (!isLinkLocal(address)) throw new UsageError(`${name}: a zone (%${zone}) goes only with a link-local address, got "${value}"`);
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(zone)) throw new UsageError(`${name}: the zone must be an interface name, got "${value}"`);
  return zone;
}

export function methodOption(value: string): CloseMethod {
  try {
    return parseCloseMethod(value);
  } catch (err) {
    throw new UsageError(`--method: ${(err as Error).message}`);
  }
}

export function peersOption(value: string): Endpoint[] {
  const parts = value.split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) throw new UsageError('--peers must list at least one ADDRESS:PORT');
  return parts.map((p) => {
    try {
      return parseEndpoint(p);
    } catch (err) {
      throw new UsageError(`--peers: ${(err as Error).message}`);
    }
  });
}

/** An interface of this host (this network namespace); a name that is not one is a usage error. */
export async function interfaceOption(value: string, name = '--interface'): Promise<string> {
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(value)) throw new UsageError(`${name} must be an interface name, got "${value}"`);
  if (!(await interfaceExists(value))) throw new UsageError(`${name}: ${value} is not an interface of this host`);
  return value;
}
