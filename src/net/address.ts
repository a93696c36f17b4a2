// Address takeover: move a dead node's IP onto this host and tell the link about it, so its
// peers' next segment (a retransmission) reaches us and meets a RST instead of silence.
import { setTimeout as sleep } from 'node:timers/promises';
import { native, type AddressEntry, type NativeError } from '../native.js';
import { entryFor, unusableReason } from './address-state.js';

/** Adds address/prefixLength to ifname (IPv6 without DAD). Throws EEXIST if already there. */
export function addAddress(ifname: string, address: string, prefixLength: number): void {
  native.addAddress(ifname, address, prefixLength);
}

/** Removes address/prefixLength from ifname. Throws EADDRNOTAVAIL if it is not there. */
export function removeAddress(ifname: string, address: string, prefixLength: number): void {
  native.removeAddress(ifname, address, prefixLength);
}

/**
 * Each entry of address on ifname as the kernel holds it (prefix length, IFA_F_* flags, scope,
 * lifetimes in s, -1 = forever); [] when it is not there. Throws ENODEV for an unknown interface.
 */
export function addressEntries(ifname: string, address: string): AddressEntry[] {
  return native.addressEntries(ifname, address);
}

/** IFA_F_* bits an IPv6 address keeps through a lifetime change (the kernel replaces its flags). */
const KEPT_FLAGS = 0x02 /* NODAD */ | 0x10 /* HOMEADDRESS */ | 0x100 /* MANAGETEMPADDR */ | 0x200 /* NOPREFIXROUTE */;

/**
 * Sets the kernel lifetime (valid and preferred) of an address that is on ifname: `seconds` from
 * now (the kernel removes the address when it runs out), or 'forever' (permanent again). Keeps
 * the entry's prefix length and its IPv6 flags. Throws EADDRNOTAVAIL, without touching anything,
 * when the address is not there under prefixLength: the kernel would add it, and an address
 * whose lease ran out must not come back by itself.
 */
export function setAddressLifetime(ifname: string, address: string, prefixLength: number, seconds: number | 'forever'): void {
  const entry = addressEntries(ifname, address).find((e) => e.prefixLength === prefixLength);
  if (!entry) throw Object.assign(new Error(`EADDRNOTAVAIL: ${address}/${prefixLength} is not on ${ifname}`), { code: 'EADDRNOTAVAIL', errno: -99, syscall: 'rtnetlink' });
  native.setAddressLifetime(ifname, address, prefixLength, seconds === 'forever' ? -1 : seconds, entry.flags & KEPT_FLAGS);
}

export interface AnnounceOptions {
  /** Number of announcements (gratuitous ARP / unsolicited NA); default 3. */
  count?: number;
  /** Pause between announcements; default 0. The first one goes out at once. */
  intervalMs?: number;
}

/**
 * Tells the link that address is at ifname's MAC, count times. Several copies because one
 * broadcast frame can be lost and nothing would repeat it.
 */
export async function announceAddress(ifname: string, address: string, options: AnnounceOptions = {}): Promise<void> {
  const count = options.count ?? 3;
  const intervalMs = options.intervalMs ?? 0;
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer: ${count}`);
  if (!(intervalMs >= 0)) throw new RangeError(`intervalMs must be >= 0: ${intervalMs}`);
  for (let i = 0; i < count; i++) {
    if (i > 0 && intervalMs > 0) await sleep(intervalMs);
    native.announceAddress(ifname, address);
  }
}

/**
 * Whether packets for address are delivered on this host, routed as leaving through ifname (its
 * route is local: `ip route get ADDRESS oif IFNAME` says `local`). Throws TypeError for a bad
 * address, a NativeError (ENODEV) for an unknown interface.
 */
export function routesLocally(ifname: string, address: string): boolean {
  return native.routesLocally(ifname, address);
}

/** How long takeOverAddress waits for the kernel's local route of an address it added, ms. */
export const LOCAL_ROUTE_WAIT_MS = 1000;

/**
 * Resolves once packets for the address are delivered here (its local route is in): Linux lists
 * an IPv6 address added without DAD at once but inserts its local route from a workqueue, a few
 * ms later on a busy host; an answer sent to the address before that is dropped (a lab run's
 * first neighbour advertisement was, and the takeover's RSTs waited 1 s for the next). Polls
 * every ms (a route get is one netlink round trip); throws ERR_ADDRESS_UNUSABLE after
 * LOCAL_ROUTE_WAIT_MS. IPv4 inserts its local route with the address: it never waits.
 */
async function untilRoutedLocally(ifname: string, address: string, prefixLength: number): Promise<void> {
  const deadline = performance.now() + LOCAL_ROUTE_WAIT_MS;
  while (!routesLocally(ifname, address)) {
    if (performance.now() > deadline) {
      throw Object.assign(new Error(`${address}/${prefixLength} on ${ifname} cannot be used after the takeover: no local route after ${LOCAL_ROUTE_WAIT_MS} ms`), { code: 'ERR_ADDRESS_UNUSABLE' });
    }
    await sleep(1);
  }
}

export interface TakeOverOptions {
  /** Announcements after adding; default 3 (0 = none). */
  announce?: number;
  announceIntervalMs?: number;
}

export interface TakeOverResult {
  /** false when the address was already on the interface, usable (it was ours before the call). */
  added: boolean;
  /**
   * Set when the address was already there but could not serve (why: 'dadfailed tentative',
   * 'deprecated', 'prefix /64, not /80', ...): it was removed and added again (added: true).
   */
  replaced?: string;
}

/**
 * Adds the address (IPv6 without DAD) and then announces it. An address already there is kept
 * when it is usable, and replaced (removed, added again) when it is not: an IPv6 address whose
 * DAD failed (the dead node held it when this one was configured), still tentative, deprecated,
 * expiring, or under another prefix length. Announced in every case: neighbours may still hold
 * the old owner's MAC even when we had the address already.
 * Resolves once the kernel delivers packets for it (its local route is in) and the
 * announcements are sent.
 * Throws the rtnetlink error of a failed add or remove, and ERR_ADDRESS_UNUSABLE when the
 * address is still not usable afterwards, or has no local route after LOCAL_ROUTE_WAIT_MS
 * (nothing is announced then).
 */
export async function takeOverAddress(
  ifname: string,
  address: string,
  prefixLength: number,
  options: TakeOverOptions = {},
): Promise<TakeOverResult> {
  const result: TakeOverResult = { added: true };
  try {
    addAddress(ifname, address, prefixLength);
  } catch (err) {
    if ((err as NativeError).code !== 'EEXIST') throw err;
    const found = entryFor(addressEntries(ifname, address), prefixLength);
    const reason = found && unusableReason(found, prefixLength);
    if (found && reason) {
      removeAddress(ifname, address, found.prefixLength);
      addAddress(ifname, address, prefixLength);
      result.replaced = reason;
    } else {
      result.added = false;
    }
  }
  const now = addressEntries(ifname, address).find((e) => e.prefixLength === prefixLength);
  const still = now ? unusableReason(now, prefixLength) : 'gone';
  if (still) {
    throw Object.assign(new Error(`${address}/${prefixLength} on ${ifname} cannot be used after the takeover: ${still}`), { code: 'ERR_ADDRESS_UNUSABLE' });
  }
  await untilRoutedLocally(ifname, address, prefixLength);
  await announceAddress(ifname, address, {
    count: options.announce ?? 3,
    intervalMs: options.announceIntervalMs ?? 0,
  });
  return result;
}
