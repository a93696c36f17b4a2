// Whether an address found on an interface can serve as a taken-over service address. An
// address can be present and still unusable: IPv6 keeps one whose duplicate address detection
// failed ("dadfailed tentative": bind fails with EADDRNOTAVAIL, nothing answers for it), one
// still in DAD (tentative), a deprecated one (never chosen as a source, soon gone), one that
// expires, or one under another prefix length than the takeover's (another on-link route).
// Pure: the state comes from net/address.ts (RTM_GETADDR).
import type { AddressEntry } from '../native.js';

/** IFA_F_* bits of include/uapi/linux/if_addr.h that decide usability. */
export const IFA_F = {
  DADFAILED: 0x08,
  DEPRECATED: 0x20,
  TENTATIVE: 0x40,
} as const;

/**
 * Why this entry of the address cannot serve a takeover with prefixLength, as one short text
 * ('dadfailed tentative', 'deprecated, expires in 20 s', 'prefix /64, not /80'), or undefined
 * when it can. A finite valid lifetime counts: the kernel would remove the address while we
 * serve on it.
 */
export function unusableReason(entry: AddressEntry, prefixLength: number): string | undefined {
  const reasons: string[] = [];
  const state = [
    entry.flags & IFA_F.DADFAILED ? 'dadfailed' : '',
    entry.flags & IFA_F.TENTATIVE ? 'tentative' : '',
    entry.flags & IFA_F.DEPRECATED || entry.preferredLifetime === 0 ? 'deprecated' : '',
  ].filter(Boolean);
  if (state.length > 0) reasons.push(state.join(' '));
  if (entry.validLifetime >= 0) reasons.push(`expires in ${entry.validLifetime} s`);
  if (entry.prefixLength !== prefixLength) reasons.push(`prefix /${entry.prefixLength}, not /${prefixLength}`);
  return reasons.length > 0 ? reasons.join(', ') : undefined;
}

/** The entry a takeover with prefixLength finds: the one of that prefix length, else the first. */
export function entryFor(entries: AddressEntry[], prefixLength: number): AddressEntry | undefined {
  return entries.find((e) => e.prefixLength === prefixLength) ?? entries[0];
}
