// Address takeover: move a dead node's IP onto this host and tell the link about it, so its
// peers' next segment (a retransmission) reaches us and meets a RST instead of silence.
import { setTimeout as sleep } from 'node:timers/promises';
import { native, type NativeError } from '../native.js';

/** Adds address/prefixLength to ifname (IPv6 without DAD). Throws EEXIST if already there. */
export function addAddress(ifname: string, address: string, prefixLength: number): void {
  native.addAddress(ifname, address, prefixLength);
}

/** Removes address/prefixLength from ifname. Throws EADDRNOTAVAIL if it is not there. */
export function removeAddress(ifname: string, address: string, prefixLength: number): void {
  native.removeAddress(ifname, address, prefixLength);
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

export interface TakeOverOptions {
  /** Announcements after adding; default 3 (0 = none). */
  announce?: number;
  announceIntervalMs?: number;
}

export interface TakeOverResult {
  /** false when the address was already on the interface (it was ours before the call). */
  added: boolean;
}

/**
 * Adds the address (an EEXIST means we already own it) and then announces it, in both cases:
 * neighbours may still hold the old owner's MAC even when we had the address already.
 */
export async function takeOverAddress(
  ifname: string,
  address: string,
  prefixLength: number,
  options: TakeOverOptions = {},
): Promise<TakeOverResult> {
  let added = true;
  try {
    addAddress(ifname, address, prefixLength);
  } catch (err) {
    if ((err as NativeError).code !== 'EEXIST') throw err;
    added = false;
  }
  await announceAddress(ifname, address, {
    count: options.announce ?? 3,
    intervalMs: options.announceIntervalMs ?? 0,
  });
  return { added };
}
